#!/bin/sh
# A nightly backup that resumes where it was stopped.
#
# Each step is checkpointed in mcp-orchestrator's store, in one run per night (the --key). When the
# job is killed part way (a reboot, the OOM killer, kill -9), running it again skips the steps that
# completed and starts over at the one that was cut short; once the night's run has finished,
# running it again changes nothing. Each step is safe to repeat, since a kill between a step's work
# and its checkpoint repeats that one step.
#
#   SOURCE=$HOME/projects DEST=/mnt/backup sh nightly-backup.sh
#   crontab -e:  30 2 * * *  SOURCE=$HOME/projects DEST=/mnt/backup sh /path/to/nightly-backup.sh
#
# SOURCE: the directory to back up; DEST: where the archives go; KEEP: how many nightly archives to
# keep (default 7); NIGHT: the night this run is for (default today's date). MCP_ORCHESTRATOR_DB
# selects the store, as for every mcp-orchestrator command.
set -eu

: "${SOURCE:?set SOURCE to the directory to back up}" "${DEST:?set DEST to the directory the archives go to}"
KEEP=${KEEP:-7}
NIGHT=${NIGHT:-$(date +%F)}
STAGING="$DEST/.staging"
ARCHIVE="backup-$NIGHT.tar.gz"

# The same run every time this script runs for this night. --timeout: a night that failed and was never
# run again would otherwise stay a live (running) run for ever, and a live run keeps retention from
# removing events newer than its start; a day after its start it fails instead, and holds nothing back.
RUN=$(mcp-orchestrator start nightly-backup --key "nightly-backup-$NIGHT" --label job=backup --timeout 86400)

# todo STEP: true when STEP is to be done now (an attempt of it is recorded first); false when an
# earlier run of this script completed it. Any other answer (the store unreachable ...) stops the job.
todo() {
    answer=0
    mcp-orchestrator checkpoint "$RUN" "$1" --begin --exit-code >/dev/null || answer=$?
    case $answer in
        0) return 0 ;;
        3) return 1 ;;
        *) exit "$answer" ;;
    esac
}

if todo snapshot; then
    rm -rf "$STAGING" && mkdir -p "$STAGING"  # what an attempt cut short left behind goes first
    tar -czf "$STAGING/$ARCHIVE" -C "$SOURCE" .
    mcp-orchestrator checkpoint "$RUN" snapshot --output "{\"bytes\": $(wc -c <"$STAGING/$ARCHIVE")}"
fi

if todo verify; then
    files=$(tar -tzf "$STAGING/$ARCHIVE" | wc -l)
    mcp-orchestrator checkpoint "$RUN" verify --output "{\"entries\": $files}"
fi

if todo upload; then
    # Copied under another name, then renamed: a copy cut short never passes for an archive.
    cp "$STAGING/$ARCHIVE" "$DEST/$ARCHIVE.part"
    mv "$DEST/$ARCHIVE.part" "$DEST/$ARCHIVE"
    mcp-orchestrator checkpoint "$RUN" upload --output "\"$ARCHIVE\""
fi

if todo prune; then
    # The archives older than the newest $KEEP (their names sort by date), and the staging directory.
    ls "$DEST" | grep '^backup-.*\.tar\.gz$' | sort -r | tail -n "+$((KEEP + 1))" | while read -r old; do
        rm -f "$DEST/$old"
    done
    rm -rf "$STAGING"
    mcp-orchestrator checkpoint "$RUN" prune
fi

mcp-orchestrator finish "$RUN" --output "{\"archive\": \"$ARCHIVE\"}" >/dev/null
echo "backup for $NIGHT: $DEST/$ARCHIVE"
