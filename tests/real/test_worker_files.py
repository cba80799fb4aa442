"""The rank's heartbeat file: written by two threads at once, it must never fail or tear."""

from __future__ import annotations

import json
import threading

from palsgd.real.worker import RankFiles


def test_concurrent_beats_never_fail(tmp_path):
    files = RankFiles(tmp_path, "ddp", rank=0)
    errors: list[BaseException] = []

    def beat_often(step: int):
        try:
            for _ in range(300):
                files.update(step=step)
                files.beat()
        except BaseException as err:  # collected and asserted on below
            errors.append(err)

    threads = [threading.Thread(target=beat_often, args=(s,)) for s in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(files.progress_path.read_text())["step"] in (1, 2, 3)
