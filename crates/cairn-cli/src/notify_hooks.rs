//! Sends a job's events to the notification targets of the configuration.
//! Delivery failures are logged by the notify module and never change the
//! job's outcome.

use zeroize::Zeroizing;

use crate::config::Loaded;
use crate::notify::{CommandHook, Event, Webhook, deliver};

/// Delivers an event of `job` to the targets whose filters take it.
pub fn job_event(loaded: &Loaded, job: &str, event: &Event) {
    let mut webhooks = Vec::new();
    let mut hooks = Vec::new();
    for (name, target) in &loaded.config.notify {
        if !target.jobs.is_empty() && !target.jobs.iter().any(|j| j == job) {
            continue;
        }
        let events: Vec<String> = target.events.iter().map(|e| e.get_ref().clone()).collect();
        let timeout = target
            .timeout
            .as_ref()
            .and_then(|t| crate::config::parse_duration(t.get_ref()).ok());
        if let Some(url) = &target.webhook {
            let secret = match &target.secret {
                Some(secret) => match secret.read(&format!("secret of notify {name}")) {
                    Ok(secret) => Some(Zeroizing::new(secret.to_string())),
                    Err(e) => {
                        // An unsigned event would be dropped by a receiver
                        // that checks signatures, or trusted by one that
                        // does not: send nothing.
                        tracing::error!(notify = %name, error = %format!("{e:#}"), "cannot read the webhook secret; the event was not sent");
                        continue;
                    }
                },
                None => None,
            };
            webhooks.push(Webhook {
                url: url.clone(),
                secret,
                timeout: timeout.unwrap_or(crate::notify::DEFAULT_WEBHOOK_TIMEOUT),
                retries: target.retries,
                events,
            });
        } else if let Some(argv) = &target.command {
            hooks.push(CommandHook {
                argv: argv.clone(),
                timeout: timeout.unwrap_or(crate::notify::DEFAULT_HOOK_TIMEOUT),
                events,
            });
        }
    }
    if webhooks.is_empty() && hooks.is_empty() {
        return;
    }
    for warning in deliver(event, &webhooks, &hooks) {
        tracing::warn!(job, warning = %warning, "notification failed");
    }
}
