"""llama.vim, unchanged (tests/serve/editors/llama.vim), in a real Vim in a terminal, against a real
`codegemma serve`: the plugin builds its own `/infill` request (input_extra ring, n_indent, samplers,
t_max_predict_ms, response_fields), parses the reply with its own checks, shows the suggestion as
ghost text in insert mode and, accepted as with Tab, writes it into the buffer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serve.conftest import _start

PLUGIN = Path(__file__).parent / "editors" / "llama.vim"

DRIVER = r"""
set nocompatible cmdheight=5 shortmess+=F
let g:llama_config = {'endpoint_fim': '%(url)s/infill', 'auto_fim': v:false, 'show_info': 0}
let &runtimepath = '%(plugin)s,' . &runtimepath
" (its start-up warns on Vim < 9.1, which would wait at a hit-enter prompt)
silent! runtime plugin/llama.vim
edit %(file)s
call cursor(2, 5)
function! Poll(timer) abort
  if llama#is_fim_hint_shown()
    call writefile(['shown', mode()], '%(status)s')
    call llama#fim_accept('full')
    stopinsert
    write! %(out)s
    qa!
  endif
endfunction
function! GiveUp(timer) abort
  call writefile(['no suggestion', mode()], '%(status)s')
  qa!
endfunction
call timer_start(300, {-> llama#fim(-1, -1, v:false, [], v:false)})
call timer_start(50, 'Poll', {'repeat': -1})
call timer_start(60000, 'GiveUp')
startinsert
"""


def _vim_can_run_llama_vim() -> str | None:
    vim = shutil.which("vim")
    if vim is None or shutil.which("curl") is None or shutil.which("script") is None:
        return "needs vim, curl and script (util-linux)"
    features = subprocess.run([vim, "--version"], capture_output=True, text=True).stdout
    if not all(f"+{f}" in features for f in ("job", "timers", "textprop", "channel")):
        return "this vim lacks +job/+timers/+textprop/+channel"
    return None


@pytest.mark.skipif(_vim_can_run_llama_vim() is not None, reason=str(_vim_can_run_llama_vim()))
def test_llama_vim_shows_and_accepts_a_suggestion(tmp_path_factory, tmp_path):
    # the built-in model (trained: a suggestion with text in it), greedy for requests that set no
    # temperature (llama.vim sets none), as llama-server's --temp 0
    server = _start(tmp_path_factory, "nano", "llamavim", "--temp", "0")
    try:
        source = tmp_path / "add.py"
        source.write_text("def add(a, b):\n    \n\nprint(add(1, 2))\n")
        status, out = tmp_path / "status.txt", tmp_path / "out.py"
        driver = tmp_path / "drive.vim"
        driver.write_text(DRIVER % {"url": server.url, "plugin": PLUGIN, "file": source, "status": status,
                                    "out": out})
        # a terminal: the plugin shows suggestions in insert mode only, and Vim needs one for that
        subprocess.run(["script", "-qfec", f"vim -N -u {driver} -i NONE", "/dev/null"], cwd=tmp_path,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        assert status.read_text().split() == ["shown", "i"], status.read_text()
        before, after = source.read_text().splitlines(), out.read_text().splitlines()
        # the suggestion went in at the cursor (line 2 after its 4 spaces), the rest of the file is as it was
        assert after[0] == before[0] and after[-2:] == before[-2:]
        assert len(after) >= len(before) and after[1].startswith("    ") and after[1].strip()
        log = server.log()
        assert '"POST /infill HTTP/1.1" 200' in log and " 500" not in log
        server.assert_alive()
    finally:
        server.stop()
