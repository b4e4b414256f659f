"""The pure core of bgserve: releases, the rollout state machine, comparison scoring."""
