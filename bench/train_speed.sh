#!/usr/bin/env bash
# bench/train_speed.sh: training samples/s of CALL pepnet_train against PyTorch (1 thread) on
# bench/bench-config.json; the same as `bench/quality.sh speed` (see there).
exec "$(dirname "$0")/quality.sh" speed
