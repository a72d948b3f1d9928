//! Scenario 7 — events: Event Grid batches accepted per second and delivery latency to a warm
//! and a cold target. It needs the event gateway (`eventgrid-adapter/`), which does not exist
//! yet; until it does, the report says so instead of inventing numbers.

use serde_json::json;

use crate::Ctx;
use crate::report::Report;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let gateway = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../eventgrid-adapter");
    let mut r = Report::new("events", "Events: Event Grid batches through the gateway");
    if gateway.exists() {
        anyhow::bail!(
            "eventgrid-adapter/ exists: the events scenario must be written before it can run (see the issue)"
        );
    }
    r.para(
        "Not run: the event gateway (`eventgrid-adapter/`) does not exist yet. This scenario will post \
         Event Grid batches with a pinned load tool and measure batches accepted per second and \
         end-to-end delivery latency to a warm and a cold target once it does.",
    );
    r.summary = "events: not run — the event gateway does not exist yet".into();
    r.data = json!({"run": false, "reason": "eventgrid-adapter/ does not exist yet", "smoke": ctx.smoke});
    Ok(r)
}
