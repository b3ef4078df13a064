"""A training run's registration and gate, paused at one step so the test can kill -9 it.

    python tests/training/kill_child.py POINT MARKER_FILE RUN_ID     (MLFLOW_TRACKING_URI set)

POINT: `registered` (the version row exists, inside MLflow's registration), `before_gate`
(registered, not judged), `promoting` (judged champion, alias not moved), `alias_moved`
(alias moved, promotion log not yet written). At the point the child writes MARKER_FILE and
sleeps; it is never meant to get further. RUN_ID: the run that logged the model (the test
logs it: the child only registers and gates). The code paused is the real one (training.gate,
training.registry, MLflow): a profile hook only watches for the function named.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project

POINTS = {"registered": ("return", "create_model_version"), "before_gate": ("call", "_verdict"),
          "promoting": ("call", "move_champion"), "alias_moved": ("return", "set_registered_model_alias")}


def main(point: str, marker: str, run_id: str) -> None:
    from training import gate

    event_wanted, name = POINTS[point]

    def pause_at(frame, event, _arg):
        if event == event_wanted and frame.f_code.co_name == name:
            Path(marker).write_text(point)
            time.sleep(600)

    sys.setprofile(pause_at)
    gate.register_and_gate(run_id, "model", "killed", candidate=gate.HoldoutScore(0.2, 0.8, 0.4),
                           skill={"n": 100, "z_vs_base_rate": 10.0, "z_vs_stage_rate": 10.0})
    sys.setprofile(None)
    Path(marker).write_text("finished without pausing")


if __name__ == "__main__":
    main(*sys.argv[1:4])
