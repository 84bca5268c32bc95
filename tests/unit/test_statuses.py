"""Status words (run.py): every status has its place in the ledger, and the stored strings never change."""

from __future__ import annotations

import pickle

from chute.attempt import Phase, Progress
from chute.ledger import State
from chute.run import LEDGER_STATE, EntryStatus, Fault, Outcome, OutcomeStatus, RunStatus, Verdict, failure


def test_every_run_status_is_written_in_the_ledger_as_the_same_word_as_before():
    # The ledger's rows, `chute status` and chute_runs_total{status} read these strings:
    # a new RunStatus without a ledger state, or a renamed one, breaks them all.
    assert set(LEDGER_STATE) == set(RunStatus)
    assert {status.value: state.value for status, state in LEDGER_STATE.items()} == {
        "succeeded": "succeeded",
        "failed": "failed",
        "released": "released",
        "lost": "discarded",
        "deferred": "queued",
    }
    assert all(isinstance(state, State) for state in LEDGER_STATE.values())


def test_the_manifest_and_metrics_words_of_entries_and_outcomes_stay_the_same():
    assert [s.value for s in EntryStatus] == ["pending", "running", "succeeded", "failed", "cancelled"]
    assert [s.value for s in OutcomeStatus] == ["succeeded", "failed", "cancelled", "deferred"]
    assert [f.value for f in Fault] == ["outage", "machine", "crash"]


def test_a_failure_with_a_fault_is_deferred_and_without_one_is_the_files():
    error = failure("exited with status 1", step="probe", module="probe", exit_code=1)
    assert Verdict.failed(error) == Verdict(OutcomeStatus.FAILED, error, None)
    assert Verdict.failed(error, Fault.MACHINE) == Verdict(OutcomeStatus.DEFERRED, error, Fault.MACHINE)
    assert Verdict.cancelled(error).status is OutcomeStatus.CANCELLED


def test_an_outcome_reads_its_verdict_and_crosses_a_process_boundary_intact():
    outcome = Outcome(started_at="2025-01-01T00:00:00.000Z")
    assert (outcome.status, outcome.error, outcome.fault) == (OutcomeStatus.SUCCEEDED, None, None)
    outcome.verdict = Verdict.failed(failure("no space"), Fault.MACHINE)
    back = pickle.loads(pickle.dumps(outcome))  # a Dask worker sends results back pickled
    assert (back.status, back.error["reason"], back.fault) == (OutcomeStatus.DEFERRED, "no space", Fault.MACHINE)


def test_an_attempt_keeps_the_reason_chute_stopped_it_for_through_its_later_phases():
    running = Progress(Phase.RUNNING, due=10.0)
    stopping = running.then(Phase.STOPPING, 15.0, "timed out after 10 s")
    killed = stopping.then(Phase.KILLED, 25.0)
    draining = killed.then(Phase.DRAINING, 27.0, "cancelled")  # a later stop does not rewrite why
    assert [p.phase for p in (running, stopping, killed, draining)] == list(Phase)
    assert [p.reason for p in (running, stopping, killed, draining)] == [None, *["timed out after 10 s"] * 3]
    assert draining.due == 27.0
