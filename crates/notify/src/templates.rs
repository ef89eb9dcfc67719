//! The Chinese texts of every SMS the applicant receives. Permits issued online carry no
//! endorsement (policy, other points 3): every SMS about a permit says so.

use std::collections::BTreeMap;
use wangban_domain::application::DocumentKind;

/// What an SMS is for; one SMS per (case, purpose).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    DocumentInvalidated,
    Rejected,
    CorrectionRequested,
    CorrectionLapsed,
    ReviewRejected,
    FeeDue,
    PaymentReminder,
    PaymentExpired,
    InProduction,
    Shipped,
    Returned,
    ReadyForPickup,
    Delivered,
}

impl Purpose {
    /// The purpose's name: the template code and the effect key.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::DocumentInvalidated => "document_invalidated",
            Purpose::Rejected => "rejected",
            Purpose::CorrectionRequested => "correction_requested",
            Purpose::CorrectionLapsed => "correction_lapsed",
            Purpose::ReviewRejected => "review_rejected",
            Purpose::FeeDue => "fee_due",
            Purpose::PaymentReminder => "payment_reminder",
            Purpose::PaymentExpired => "payment_expired",
            Purpose::InProduction => "in_production",
            Purpose::Shipped => "shipped",
            Purpose::Returned => "returned",
            Purpose::ReadyForPickup => "ready_for_pickup",
            Purpose::Delivered => "delivered",
        }
    }
}

const SIGN: &str = "【国家移民管理局】";
const NO_ENDORSEMENT: &str = "网上换补发的通行证不含有效签注，出行前请另行申请签注。";

/// The provider template of `purpose` for a document of `kind`: permits have their own (their
/// texts carry the no-endorsement note).
pub fn template_name(purpose: Purpose, kind: Option<DocumentKind>) -> String {
    if kind.is_some_and(DocumentKind::is_permit) {
        format!("{}_permit", purpose.as_str())
    } else {
        purpose.as_str().to_owned()
    }
}

/// Renders the SMS text of `purpose` with `params` (each template names the keys it uses).
pub fn render(
    purpose: Purpose,
    kind: Option<DocumentKind>,
    params: &BTreeMap<String, String>,
) -> String {
    let p = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let doc = kind.map_or("出入境证件", DocumentKind::name_zh);
    let body = match purpose {
        Purpose::DocumentInvalidated => {
            format!("您的{doc}换补发申请已受理，原持有的{doc}已自动作废，不可恢复。")
        }
        Purpose::Rejected => format!("您的{doc}网上申请未通过：{}。咨询电话12367。", p("reasons")),
        Purpose::CorrectionRequested => format!(
            "您的{doc}申请需补正：{}。{}请登录国家移民管理局政务服务平台修改后重新提交。",
            p("items"),
            p("message")
        ),
        Purpose::CorrectionLapsed => format!(
            "您的{doc}申请因{}已终止办理。如仍需办理，请重新提交申请。咨询电话12367。",
            p("why")
        ),
        Purpose::ReviewRejected => format!(
            "您的{doc}申请经审核未通过：{}。咨询电话12367。",
            p("reason")
        ),
        Purpose::FeeDue => format!(
            "您的{doc}申请已审核通过，请在{}日内登录国家移民管理局政务服务平台缴纳证件工本费{}元，逾期申请失效。",
            p("days"),
            p("amount")
        ),
        Purpose::PaymentReminder => format!(
            "您的{doc}申请尚未缴纳证件工本费{}元，逾期未缴申请将失效。",
            p("amount")
        ),
        Purpose::PaymentExpired => format!("您的{doc}申请因未在规定期限内缴纳证件工本费已失效。"),
        Purpose::InProduction => {
            format!("您已缴纳{doc}工本费，证件制作中，将于3个工作日内制作完成。")
        }
        Purpose::Shipped => format!(
            "您的{doc}已寄出，运单号{}，邮费到付，由收件人在签收时支付。",
            p("waybill")
        ),
        Purpose::Returned => format!(
            "您的{doc}快递未能投递（运单号{}），已退回，将转至户籍地公安机关出入境接待大厅，到达后另行短信通知您携带身份证领取。",
            p("waybill")
        ),
        Purpose::ReadyForPickup => {
            format!("您的{doc}已制作完成，请携带身份证到{}领取。", p("hall"))
        }
        Purpose::Delivered => format!("您的{doc}已签收。"),
    };
    let permit = kind.is_some_and(DocumentKind::is_permit);
    format!("{SIGN}{body}{}", if permit { NO_ENDORSEMENT } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_always_carry_the_no_endorsement_note() {
        let all = [
            Purpose::DocumentInvalidated,
            Purpose::Rejected,
            Purpose::CorrectionRequested,
            Purpose::CorrectionLapsed,
            Purpose::ReviewRejected,
            Purpose::FeeDue,
            Purpose::PaymentReminder,
            Purpose::PaymentExpired,
            Purpose::InProduction,
            Purpose::Shipped,
            Purpose::Returned,
            Purpose::ReadyForPickup,
            Purpose::Delivered,
        ];
        for purpose in all {
            for kind in [DocumentKind::HkMacaoPermit, DocumentKind::TaiwanPermit] {
                assert!(
                    render(purpose, Some(kind), &BTreeMap::new()).contains("不含有效签注"),
                    "{purpose:?}"
                );
            }
            assert!(
                !render(purpose, Some(DocumentKind::Passport), &BTreeMap::new()).contains("签注"),
                "{purpose:?}"
            );
        }
    }

    #[test]
    fn shipped_names_the_waybill_and_postage_on_delivery() {
        let params = BTreeMap::from([("waybill".to_string(), "SF000000000001".to_string())]);
        let text = render(Purpose::Shipped, Some(DocumentKind::Passport), &params);
        assert!(
            text.contains("SF000000000001") && text.contains("到付"),
            "{text}"
        );
    }
}
