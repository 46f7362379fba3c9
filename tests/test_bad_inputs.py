"""Every bad input in tests/bad_inputs.py: one line naming what is wrong, the right exit code, no traceback,
no run left RUNNING, and an answer within its time limit."""

import pytest
from bad_inputs import CASES, run_case

pytestmark = pytest.mark.slow  # a child process per case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line(case, tmp_path):
    outcome = run_case(case, tmp_path)
    assert not outcome.problems(), (outcome.problems(), outcome.output[-2000:])
