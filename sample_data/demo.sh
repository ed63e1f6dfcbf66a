#!/usr/bin/env bash
# The whole mbp cycle on the CDNOW sample: seven daily mini-batches after the model's
# cutoff (1997-10-01), each through the real shell pipeline, then the ranking.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PWD/../.venv/bin:$PATH"

rm -rf predictions
echo "== mbp on the CDNOW sample: settings from sample_data/mbp.toml"
for day in 02 03 04 05 06 07 08; do
    # One scheduled time for both commands of the pipeline, as cron would agree on it.
    export MBP_SCHEDULED_TIME="1997-10-${day}T00:00:00"
    echo
    echo "-- batch $MBP_SCHEDULED_TIME: mbp predict --rowid-filter \"\$(mbp list-users)\""
    mbp predict --rowid-filter "$(mbp list-users)"
done
unset MBP_SCHEDULED_TIME

echo
echo "-- the dataset:"
find predictions -name '*.parquet' | sort
echo
echo "-- mbp rank --format table (latest score per user, at or above 0.7, top 10):"
mbp rank --format table
