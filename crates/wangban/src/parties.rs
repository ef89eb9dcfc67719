//! Which parties a pipeline talks to: a party with `WANGBAN_<PARTY>_URL` set is reached over
//! HTTP ([`wangban_providers::http`]); the others (and the pickup hall and review desk, always)
//! are the simulated ones of the demo.
//!
//! Per party (`SMS`, `PAYMENT`, `PRODUCTION`, `COURIER`):
//!
//! | variable | default | |
//! |---|---|---|
//! | `WANGBAN_<P>_URL` | unset: simulated | base URL of the party's API |
//! | `WANGBAN_<P>_KEY_ID` | `wangban` | key id sent with our signatures and expected on callbacks |
//! | `WANGBAN_<P>_SECRET` or `WANGBAN_<P>_SECRET_FILE` | required with a URL | the shared HMAC secret |
//! | `WANGBAN_<P>_TIMEOUT_MS` | 5000 | per attempt |
//! | `WANGBAN_<P>_ATTEMPTS` | 4 | attempts per delivery (retry budget) |
//! | `WANGBAN_<P>_BACKOFF_MS` / `WANGBAN_<P>_MAX_BACKOFF_MS` | 200 / 5000 | exponential backoff, jittered |
//! | `WANGBAN_<P>_MAX_RETRY_AFTER_SECS` | 10 | longest `Retry-After` waited out in a delivery |
//!
//! Also: `WANGBAN_SMS_SIGN_NAME` (国家移民管理局), `WANGBAN_SMS_TEMPLATE_PREFIX` (`WANGBAN_`),
//! `WANGBAN_CALLBACK_BASE_URL` (our public base URL, sent as `notify_url`), and
//! `WANGBAN_CALLBACK_TOLERANCE_SECS` (300: callbacks further from now are refused).

use crate::settings::Settings;
use anyhow::Context;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use wangban_providers::http::{
    Endpoint, HttpCourier, HttpParty, HttpPayment, HttpProduction, HttpSms,
};
use wangban_providers::simulated::Simulation;
use wangban_providers::{
    Courier, PaymentGateway, PickupHall, PickupNotice, PickupSlot, ProductionCentre, ProviderError,
    ReviewDesk, SmsGateway,
};

/// The HTTP parties' configuration.
#[derive(Clone, Debug, Default)]
pub struct PartySettings {
    pub sms: Option<Endpoint>,
    pub sms_sign_name: String,
    pub sms_template_prefix: String,
    pub payment: Option<Endpoint>,
    pub production: Option<Endpoint>,
    pub courier: Option<Endpoint>,
    pub callback_tolerance_s: i64,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn number(name: &str, default: u64) -> anyhow::Result<u64> {
    var(name).map_or(Ok(default), |v| {
        v.parse()
            .with_context(|| format!("{name} must be a whole number"))
    })
}

impl PartySettings {
    /// From the environment.
    pub fn from_env() -> anyhow::Result<PartySettings> {
        let callback_base = var("WANGBAN_CALLBACK_BASE_URL");
        let endpoint = |party: &'static str| -> anyhow::Result<Option<Endpoint>> {
            let p = party.to_ascii_uppercase();
            let Some(url) = var(&format!("WANGBAN_{p}_URL")) else {
                return Ok(None);
            };
            let secret = match (
                var(&format!("WANGBAN_{p}_SECRET")),
                var(&format!("WANGBAN_{p}_SECRET_FILE")),
            ) {
                (Some(s), _) => s,
                (None, Some(file)) => std::fs::read_to_string(&file)
                    .with_context(|| format!("reading WANGBAN_{p}_SECRET_FILE {file}"))?
                    .trim()
                    .to_owned(),
                (None, None) => anyhow::bail!(
                    "WANGBAN_{p}_URL is set: set WANGBAN_{p}_SECRET or WANGBAN_{p}_SECRET_FILE too"
                ),
            };
            anyhow::ensure!(
                secret.len() >= 16,
                "the secret of WANGBAN_{p}_… must be at least 16 characters"
            );
            let key_id = var(&format!("WANGBAN_{p}_KEY_ID")).unwrap_or_else(|| "wangban".into());
            let mut ep = Endpoint::new(party, &url, &key_id, secret.as_bytes());
            ep.timeout =
                Duration::from_millis(number(&format!("WANGBAN_{p}_TIMEOUT_MS"), 5000)?.max(1));
            ep.attempts = number(&format!("WANGBAN_{p}_ATTEMPTS"), 4)?.clamp(1, 100) as u32;
            ep.min_backoff =
                Duration::from_millis(number(&format!("WANGBAN_{p}_BACKOFF_MS"), 200)?);
            ep.max_backoff =
                Duration::from_millis(number(&format!("WANGBAN_{p}_MAX_BACKOFF_MS"), 5000)?);
            ep.max_retry_after =
                Duration::from_secs(number(&format!("WANGBAN_{p}_MAX_RETRY_AFTER_SECS"), 10)?);
            ep.callback_url = callback_base
                .as_ref()
                .map(|b| format!("{}/callbacks/{party}", b.trim_end_matches('/')));
            Ok(Some(ep))
        };
        Ok(PartySettings {
            sms: endpoint("sms")?,
            sms_sign_name: var("WANGBAN_SMS_SIGN_NAME").unwrap_or_else(|| "国家移民管理局".into()),
            sms_template_prefix: var("WANGBAN_SMS_TEMPLATE_PREFIX")
                .unwrap_or_else(|| "WANGBAN_".into()),
            payment: endpoint("payment")?,
            production: endpoint("production")?,
            courier: endpoint("courier")?,
            callback_tolerance_s: number("WANGBAN_CALLBACK_TOLERANCE_SECS", 300)? as i64,
        })
    }

    /// The endpoints configured, for the callback keys and the startup log.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        [&self.sms, &self.payment, &self.production, &self.courier]
            .into_iter()
            .flatten()
    }

    /// The keys `/callbacks/{party}` checks: each HTTP party signs with its shared secret.
    pub fn callback_keys(&self) -> wangban_api::callbacks::CallbackKeys {
        let keys: Vec<(&str, &str, Arc<[u8]>)> = self
            .endpoints()
            .map(|e| (e.party, e.key_id.as_str(), e.secret.clone()))
            .collect();
        wangban_api::callbacks::CallbackKeys::new(&keys, self.callback_tolerance_s)
    }
}

/// The parties the workers call.
pub struct Parties {
    pub sms: Arc<dyn SmsGateway>,
    pub payment: Arc<dyn PaymentGateway>,
    pub production: Arc<dyn ProductionCentre>,
    pub courier: Arc<dyn Courier>,
    pub hall: Arc<dyn PickupHall>,
    pub desk: Arc<dyn ReviewDesk>,
}

impl Parties {
    /// Every party simulated.
    pub fn simulated(sim: &Simulation) -> Parties {
        Parties {
            sms: sim.sms(),
            payment: sim.payment(),
            production: sim.production(),
            courier: sim.courier(),
            hall: sim.hall(),
            desk: sim.review_desk(),
        }
    }

    /// HTTP where `settings` configures it, simulated elsewhere.
    pub fn build(settings: &Settings, sim: &Simulation) -> anyhow::Result<Parties> {
        let p = &settings.parties;
        let mut parties = Parties::simulated(sim);
        let party = |e: &Endpoint| HttpParty::new(e.clone()).context("building an HTTP client");
        if let Some(e) = &p.sms {
            parties.sms = Arc::new(HttpSms {
                party: party(e)?,
                sign_name: p.sms_sign_name.clone(),
                template_prefix: p.sms_template_prefix.clone(),
            });
        }
        if let Some(e) = &p.payment {
            parties.payment = Arc::new(HttpPayment { party: party(e)? });
        }
        if let Some(e) = &p.production {
            parties.production = Arc::new(HttpProduction { party: party(e)? });
        }
        if let Some(e) = &p.courier {
            parties.courier = Arc::new(HttpCourier { party: party(e)? });
        }
        Ok(parties)
    }
}

/// The pickup hall as the store says: with halls loaded from the reviewers file, a document goes
/// to the hall serving the applicant's hukou district, whose staff record its arrival and its
/// collection at the hall desk (`/hall`); with none, `unstaffed` (the simulated hall) takes it.
/// Read from the store on every notice, so the courier's processes need no reviewers file.
pub struct HallDesk {
    pub store: wangban_store::Store,
    pub unstaffed: Arc<dyn PickupHall>,
}

#[async_trait]
impl PickupHall for HallDesk {
    async fn announce(&self, notice: &PickupNotice) -> Result<PickupSlot, ProviderError> {
        let store_error = |e: wangban_store::StoreError| {
            if e.is_transient() {
                ProviderError::Transient(format!("hall desk: {e}"))
            } else {
                ProviderError::Permanent(format!("hall desk: {e}"))
            }
        };
        let halls = self.store.halls().await.map_err(store_error)?;
        if halls.is_empty() {
            return self.unstaffed.announce(notice).await;
        }
        let Some(hall) = wangban_store::hall_for(&halls, &notice.hukou_region) else {
            return Err(ProviderError::Permanent(format!(
                "no hall of the reviewers file serves hukou district {}",
                notice.hukou_region
            )));
        };
        self.store
            .send_to_hall(notice.case_id.as_str(), &hall.id)
            .await
            .map_err(store_error)?;
        Ok(PickupSlot {
            hall: hall.name.clone(),
            awaiting_arrival: true,
        })
    }
}
