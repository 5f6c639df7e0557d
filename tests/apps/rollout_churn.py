"""An operator process for the rollout crash test: ``python -m tests.apps.rollout_churn
ROLLOUT_ID`` pauses and resumes the rollout as fast as it can (on AEVOS_DATABASE_URL) until
it is killed; the test SIGKILLs it, possibly mid-transaction. It prints ``ready`` once it
has made its first transition, so the test kills it while it is moving."""

from __future__ import annotations

import os
import sys

from aevos import Aevos
from aevos.errors import RolloutConflictError


def main() -> None:
    rollout_id = sys.argv[1]
    app = Aevos(os.environ["AEVOS_DATABASE_URL"])
    who = f"operator:churn{os.getpid()}#t"
    announced = False
    while True:
        state = app.rollouts.get(rollout_id).state
        try:
            if state == "paused":
                app.rollouts.resume(rollout_id, actor=who)
            else:
                app.rollouts.pause(rollout_id, actor=who)
        except RolloutConflictError:
            continue  # the other process moved it first
        if not announced:
            print("ready", flush=True)
            announced = True


if __name__ == "__main__":
    main()
