#!/bin/sh
# One-shot job (service temporal-namespace, image temporalio/admin-tools): waits until the
# Temporal server answers, then makes sure the namespace exists with the configured retention
# and carries the complaint search attributes. Idempotent: runs on every `docker compose up`.
#
# Retention: closed workflow runs (which held personal data) are deleted this long after they
# close; 720h (30 days) is what `make run` sets (devstack/stack.py NAMESPACE_RETENTION).
# The search attributes are those of complaints/search_attributes.py (the worker also adds any
# that are missing at start; registering them here first gives the server time to load them
# before the first complaint arrives). tests/test_deployment.py keeps the two lists equal.
set -eu

: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:=default}" "${TEMPORAL_NAMESPACE_RETENTION:=720h}"
t() { temporal --address "$TEMPORAL_ADDRESS" --command-timeout 10s "$@"; }

# retry TRIES WHAT COMMAND...: run COMMAND every 2 s until it succeeds; after TRIES failures, stop
# the job saying WHAT is wrong.
retry() {
    tries=$1 what=$2
    shift 2
    n=0
    until "$@" >/dev/null 2>&1; do
        n=$((n + 1))
        if [ "$n" -ge "$tries" ]; then
            echo "temporal-namespace: $what after $tries tries" >&2
            exit 1
        fi
        sleep 2
    done
}

retry 60 "the server at $TEMPORAL_ADDRESS is not serving" t operator cluster health

if t operator namespace describe --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
    t operator namespace update --namespace "$TEMPORAL_NAMESPACE" --retention "$TEMPORAL_NAMESPACE_RETENTION"
    echo "temporal-namespace: $TEMPORAL_NAMESPACE exists; retention set to $TEMPORAL_NAMESPACE_RETENTION"
else
    t operator namespace create --namespace "$TEMPORAL_NAMESPACE" --retention "$TEMPORAL_NAMESPACE_RETENTION" \
        --description "Level Up complaints"
    echo "temporal-namespace: created $TEMPORAL_NAMESPACE with retention $TEMPORAL_NAMESPACE_RETENTION"
fi

# A new namespace reaches the frontend's namespace cache within seconds; wait for it.
retry 30 "namespace $TEMPORAL_NAMESPACE is not usable" \
    t operator search-attribute list --namespace "$TEMPORAL_NAMESPACE"
existing=$(t operator search-attribute list --namespace "$TEMPORAL_NAMESPACE")

# NAME:TYPE, the types of temporal operator search-attribute create.
for attribute in \
    ComplaintPhase:Keyword \
    ComplaintRoute:Keyword \
    ComplaintProduct:Keyword \
    ComplaintOutcome:Keyword \
    ComplaintNextDeadline:Datetime \
    ComplaintOpenAlerts:KeywordList \
    ComplaintIncomplete:Bool
do
    name=${attribute%%:*}
    if printf '%s\n' "$existing" | grep -qw "$name"; then
        continue
    fi
    t operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" --name "$name" --type "${attribute#*:}"
    echo "temporal-namespace: added search attribute $name"
done
echo "temporal-namespace: done"
