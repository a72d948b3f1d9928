#!/usr/bin/env bash
# Replays sample Event Grid / CloudEvents deliveries against the local demo
# (`target/release/rouse local --config examples/local.yaml`), the way Event Grid sends them.
set -euo pipefail
cd "$(dirname "$0")"
url="${ROUSE_URL:-http://127.0.0.1:8080}"
key="${ROUSE_EVENTS_KEY:-demo-key-1}"

echo "1. Event Grid subscription validation (answered by Rouse; hello stays at zero):"
curl -sS -i "$url/webhooks/blobs?code=$key" \
  -H 'content-type: application/json' -H 'aeg-event-type: SubscriptionValidation' \
  -H 'aeg-subscription-name: ROUSE-BLOBS' --data-binary @validation.json
echo; echo
echo "2. Two BlobCreated events (stored, acknowledged, then delivered to hello, which wakes):"
curl -sS -i "$url/webhooks/blobs?code=$key" \
  -H 'content-type: application/json' -H 'aeg-event-type: Notification' \
  -H 'aeg-delivery-count: 0' --data-binary @blob-created.json
echo; echo
echo "3. The same delivery again (a retry): acknowledged, deduplicated, not delivered twice:"
curl -sS -o /dev/null -w '%{http_code}\n' "$url/webhooks/blobs?code=$key" \
  -H 'content-type: application/json' -H 'aeg-event-type: Notification' \
  -H 'aeg-delivery-count: 1' --data-binary @blob-created.json
echo
echo "4. CloudEvents handshake and a structured CloudEvent:"
curl -sS -i -X OPTIONS "$url/webhooks/orders" -H 'WebHook-Request-Origin: eventgrid.azure.net'
curl -sS -o /dev/null -w '%{http_code}\n' "$url/webhooks/orders" \
  -H 'content-type: application/cloudevents+json; charset=utf-8' --data-binary @cloudevent.json
echo
echo "5. A wrong key is refused (401, JSON naming the subscription):"
curl -sS "$url/webhooks/blobs?code=wrong" -H 'aeg-event-type: Notification' --data-binary @blob-created.json
echo; echo
echo "6. A forged event posted straight to hello's delivery path is refused (403, never reaches hello):"
curl -sS "$url/events" -H 'Host: hello.localhost' -H 'content-type: application/json' \
  --data-binary @blob-created.json
echo; echo
echo "Metrics: curl -s http://127.0.0.1:9090/metrics | grep rouse_events"
