"""Shard writer/reader round trip: sequences, segment ids, padding, shard boundaries."""

import numpy as np
import pytest

from codegemma.data.shards import FORMAT_NAME, ShardReader, ShardWriter, atomic_write_json


def _write(tmp_path, docs, seq_len, per_shard, bos_id=None):
    w = ShardWriter(tmp_path, "train", seq_len=seq_len, pad_id=0, sequences_per_shard=per_shard, bos_id=bos_id)
    for d in docs:
        w.add_document(np.asarray(d, dtype=np.uint32))
    shards = w.close()
    atomic_write_json(tmp_path / "manifest.json", {
        "format": FORMAT_NAME, "seq_len": seq_len, "pad_id": 0,
        "splits": {"train": {"shards": shards}, "val": {"shards": []}}})
    return shards


def test_round_trip_segments_and_padding(tmp_path):
    docs = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [15, 16]]
    shards = _write(tmp_path, docs, seq_len=4, per_shard=2)
    r = ShardReader(tmp_path, "train")
    assert r.seq_len == 4 and len(r) == 3 and len(shards) == 2
    seqs = [r[i] for i in range(len(r))]
    assert [s[0].tolist() for s in seqs] == [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    assert [s[1].tolist() for s in seqs] == [[0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 2, 2]]
    assert seqs[0][0].dtype == np.uint32 and seqs[0][1].dtype == np.int32
    # the concatenation of all real tokens is the documents in order
    assert np.concatenate([s[0] for s in seqs]).tolist() == sum(docs, [])
    assert len(ShardReader(tmp_path, "val")) == 0


def test_continuations_open_with_bos(tmp_path):
    docs = [[2, 5, 6], [2, 8, 9, 10, 11, 12, 13], [2, 14]]
    _write(tmp_path, docs, seq_len=4, per_shard=2, bos_id=2)
    r = ShardReader(tmp_path, "train")
    seqs = [r[i] for i in range(len(r))]
    assert [s[0].tolist() for s in seqs] == [[2, 5, 6, 2], [2, 8, 9, 10], [2, 11, 12, 13], [2, 14, 0, 0]]
    assert [s[1].tolist() for s in seqs] == [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, -1, -1]]


def test_tail_padding_is_minus_one(tmp_path):
    _write(tmp_path, [[3, 4, 5, 6, 7]], seq_len=4, per_shard=8)
    r = ShardReader(tmp_path)
    tok, seg = r[1]
    assert tok.tolist() == [7, 0, 0, 0] and seg.tolist() == [0, -1, -1, -1]
    assert r[-1][0].tolist() == tok.tolist()
    with pytest.raises(IndexError):
        r[2]


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="codegemma data prepare"):
        ShardReader(tmp_path)
