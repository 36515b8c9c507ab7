"""Shard writer/reader round trip: sequences, segment ids, padding, shard boundaries."""

import numpy as np
import pytest

from codegemma.data.shards import FORMAT_NAME, ShardReader, ShardWriter, atomic_write_json


def _write(tmp_path, docs, seq_len, per_shard, bos_id=None, **restart):
    w = ShardWriter(tmp_path, "train", seq_len=seq_len, pad_id=0, sequences_per_shard=per_shard, bos_id=bos_id,
                    **restart)
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


def test_fim_chunk_cut_after_its_suffix_sentinel_starts_over(tmp_path):
    # chunks end with 9 (the file separator); 7 plays <|fim_suffix|>
    doc = [2, 5, 5, 9, 6, 7, 6, 6, 9, 8, 8, 8, 3]
    _write(tmp_path, [doc], seq_len=8, per_shard=4, bos_id=2, restart_after_id=9, keep_from_ids=(7,))
    rows = [ShardReader(tmp_path)[i][0].tolist() for i in range(3)]
    assert rows == [[2, 5, 5, 9, 6, 7, 6, 6],    # row ends inside chunk 2, after its 7: filled with its head,
                    [2, 6, 7, 6, 6, 9, 8, 8],    # ... which starts over here, whole
                    [2, 8, 3, 0, 0, 0, 0, 0]]    # chunk 3 has no 7: it simply continues
    # the cut before the chunk's last 7, or a chunk longer than a row: plain continuation
    _write(tmp_path, [[2, 5, 5, 9, 6, 6, 6, 7, 9, 3]], seq_len=7, per_shard=4, bos_id=2,
           restart_after_id=9, keep_from_ids=(7,))
    assert ShardReader(tmp_path)[1][0].tolist() == [2, 7, 9, 3, 0, 0, 0]
    _write(tmp_path, [[2, 9, 7, 1, 1, 1, 1, 1, 1, 1, 9, 3]], seq_len=5, per_shard=4, bos_id=2,
           restart_after_id=9, keep_from_ids=(7,))
    assert ShardReader(tmp_path)[1][0].tolist() == [2, 1, 1, 1, 1]


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
