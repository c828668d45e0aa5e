# Copyright (c) DAST bundles contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
from __future__ import annotations

import sys

import pytest

from experiments.runner import Job, run_jobs


def test_finished_jobs_write_their_records_and_a_failure_names_the_job_and_its_log(tmp_path):
    done: list[str] = []
    ok = [Job(f"ok{i}", [sys.executable, "-c", f"print('hello {i}')"], tmp_path / f"ok{i}",
              lambda s, i=i: done.append(f"ok{i}")) for i in range(3)]
    run_jobs(ok, parallel=2, poll_s=0.05)
    assert sorted(done) == ["ok0", "ok1", "ok2"]
    assert (tmp_path / "ok1" / "run.log").read_text().strip() == "hello 1"
    bad = Job("bad one", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path / "bad",
              lambda s: done.append("bad"))
    with pytest.raises(SystemExit, match=r"(?s)bad one failed \(exit code 3\).*boom"):
        run_jobs([bad], poll_s=0.05)
    assert "bad" not in done
