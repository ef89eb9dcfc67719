//! The fee rules (domain.md §6): what each document costs, and how long the applicant has to pay
//! — a reminder after 3 days unpaid, the application lapsing after 7.

use crate::application::DocumentKind;
use std::time::Duration;

/// Fees and the payment window (domain.md §6).
#[derive(Clone, Debug)]
pub struct FeeConfig {
    pub passport_cny: u32,
    pub hk_macao_permit_cny: u32,
    pub taiwan_permit_cny: u32,
    /// After this long unpaid, a reminder.
    pub reminder_after: Duration,
    /// After this long unpaid, the application lapses.
    pub payment_window: Duration,
}

impl Default for FeeConfig {
    fn default() -> Self {
        FeeConfig {
            passport_cny: 120,
            hk_macao_permit_cny: 60,
            taiwan_permit_cny: 60,
            reminder_after: Duration::from_secs(3 * 86_400),
            payment_window: Duration::from_secs(7 * 86_400),
        }
    }
}

impl FeeConfig {
    /// The fee for a document kind.
    pub fn fee(&self, kind: Option<DocumentKind>) -> u32 {
        match kind {
            Some(DocumentKind::HkMacaoPermit) => self.hk_macao_permit_cny,
            Some(DocumentKind::TaiwanPermit) => self.taiwan_permit_cny,
            _ => self.passport_cny,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fee_follows_the_document_kind() {
        let fees = FeeConfig::default();
        assert_eq!(fees.fee(Some(DocumentKind::Passport)), 120);
        assert_eq!(fees.fee(Some(DocumentKind::HkMacaoPermit)), 60);
        assert_eq!(fees.fee(Some(DocumentKind::TaiwanPermit)), 60);
        assert!(fees.reminder_after < fees.payment_window);
    }
}
