"""infra/: atomic writes and log-friendly progress."""

import io
import json

import pytest

from infra.files import replace_folder, write_json
from infra.progress import LOG_INTERVAL, progress


def test_write_json_leaves_no_temporary_file(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_progress_in_a_log_file_writes_a_line_per_interval_not_per_step():
    log = io.StringIO()  # not a terminal
    with progress(total=1000, file=log) as bar:
        assert bar.mininterval == LOG_INTERVAL
        for _ in range(1000):
            bar.update(1)
    assert log.getvalue().count("\r") <= 3  # the first draw and the closing one


def test_replace_folder_never_leaves_the_target_missing(tmp_path):
    source, target, aside = tmp_path / "source", tmp_path / "target", tmp_path / ".target.old"
    aside.mkdir()  # a swap cut short between its two renames: the old folder set aside, no target
    (aside / "a.txt").write_text("old")
    with pytest.raises(FileNotFoundError):
        replace_folder(source, target)  # the copy fails: the old folder is back in place
    assert (target / "a.txt").read_text() == "old"
    source.mkdir()
    (source / "a.txt").write_text("new")
    replace_folder(source, target)
    assert (target / "a.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["source", "target"]

