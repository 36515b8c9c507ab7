"""llama.vim, unchanged (tests/serve/editors/llama.vim), in a real Vim in a terminal, against a real
`codegemma serve`: the plugin builds its own `/infill` request (input_extra ring, n_indent, samplers,
t_max_predict_ms, response_fields), parses the reply with its own checks, shows the suggestion as
ghost text in insert mode and, accepted as with Tab, writes it into the buffer."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.serve.conftest import _start

PLUGIN = Path(__file__).parent / "editors" / "llama.vim"

DRIVER = r"""
set nocompatible cmdheight=5 shortmess+=F
" no terminal queries: a late answer (on a busy machine) would be read as keys typed in insert mode
set t_RV= t_u7= t_RF= t_RB= t_RC= t_RS= t_8u=
let g:llama_config = {'endpoint_fim': '%(url)s/infill', 'auto_fim': v:false, 'show_info': 0}
let &runtimepath = '%(plugin)s,' . &runtimepath
" (its start-up warns on Vim < 9.1, which would wait at a hit-enter prompt)
silent! runtime plugin/llama.vim
edit %(file)s
call cursor(2, 4)
function! Poll(timer) abort
  if mode() =~# '^r'
    " a hit-enter prompt (the plugin warns at start-up on Vim < 9.1): Enter, as a person would
    call feedkeys("\<CR>", 'nt')
    return
  endif
  if llama#is_fim_hint_shown()
    call writefile(['shown', mode()], '%(status)s')
    call llama#fim_accept('full')
    stopinsert
    write! %(out)s
    qa!
  endif
endfunction
function! GiveUp(timer) abort
  call writefile(['no suggestion', mode()] + split(execute('messages'), "\n"), '%(status)s')
  qa!
endfunction
call timer_start(300, {-> llama#fim(-1, -1, v:false, [], v:false)})
call timer_start(50, 'Poll', {'repeat': -1})
call timer_start(60000, 'GiveUp')
" at the end of the 4 spaces of line 2 (the empty body), as `A` puts it
startinsert!
"""


def run_in_terminal(argv: list[str], cwd: Path, timeout: float) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns

    def controlling_terminal():  # as a login shell has it
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, preexec_fn=controlling_terminal,
                            env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    os.read(master, 1 << 16)
                except OSError:  # the terminal closed: Vim is exiting
                    pass
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)


def _vim_can_run_llama_vim() -> str | None:
    vim = shutil.which("vim")
    if vim is None or shutil.which("curl") is None:
        return "needs vim and curl"
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
        # a terminal: the plugin shows suggestions in insert mode only, and Vim needs one for that. Nothing
        # is typed into it from outside (the driver answers a hit-enter prompt itself); its output is read
        # and dropped so that Vim never blocks on a full pty.
        run_in_terminal(["vim", "-N", "-X", "-u", str(driver), "-i", "NONE"], tmp_path, timeout=120)
        assert status.read_text().splitlines() == ["shown", "i"], status.read_text()
        before, after = source.read_text().splitlines(), out.read_text().splitlines()
        # the suggestion went in at the cursor (line 2 after its 4 spaces), the rest of the file is as it was
        assert after[0] == before[0] and after[-2:] == before[-2:]
        assert len(after) >= len(before) and after[1].startswith("    ") and after[1].strip()
        log = server.log()
        assert '"POST /infill HTTP/1.1" 200' in log and " 500" not in log
        server.assert_alive()
    finally:
        server.stop()
