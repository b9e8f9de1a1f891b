return needsHuman(ready, stalled) or fromReady(ready)
