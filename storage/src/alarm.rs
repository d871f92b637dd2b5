//! Alarms (etcd: `server/etcdserver/api/v3alarm/alarms.go` and the capped applier in
//! `apply.go`): the set of raised alarms, one per (alarm type, member ID), replicated by
//! applying `AlarmRequest`s through Raft, persisted with the applied index and carried by
//! snapshots.
//!
//! While a NOSPACE alarm is active (any member's), applying a request that adds data
//! ([`adds_data`]: Put, a Txn with a put among its top-level operations, LeaseGrant) is
//! refused with [`Error::NoSpace`]; reads, deletes, compactions and lease revocations
//! still apply. The refusal depends only on the replicated alarm set, so every member
//! answers alike. Raising the alarm is the server's job (its quota check before proposing).
//!
//! While a CORRUPT alarm is active (raised by the server's corruption check when members'
//! HashKV differ), applying any request etcd's `applierV3Corrupt` refuses
//! ([`refused_when_corrupt`]: Put, DeleteRange, Txn, Compaction, LeaseGrant, LeaseRevoke,
//! and cairn's lease expiry, which is etcd's LeaseRevoke) fails with
//! [`Error::CorruptCluster`] ("etcdserver: corrupt cluster"). Reads served outside the log
//! (Range, read-only Txn), alarms, auth and lease checkpoints still work, as in etcd; the
//! CORRUPT refusal is checked before the NOSPACE one.
//!
//! # On disk
//! Meta key `alarms`: an encoded `cairnpb.AlarmList`, sorted by alarm type then member ID;
//! written in the same batch as the applied index of the entry that changed it; absent
//! until the first alarm is raised (an empty list once every alarm was cleared).

use std::collections::BTreeSet;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::AlarmList;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};
use prost::Message;

use crate::error::{Error, Result};

/// The Meta key the alarm list is stored under.
pub(crate) const META_ALARMS: &[u8] = b"alarms";

/// The active alarms: (alarm type, member ID) pairs, kept sorted so that the persisted
/// list and every answer are the same on all members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alarms {
    set: BTreeSet<(i32, u64)>,
}

impl Alarms {
    /// Decodes the persisted list (Meta `alarms`).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Alarms> {
        let list = AlarmList::decode(bytes).map_err(|e| Error::corrupt("meta alarms", e))?;
        Ok(Alarms { set: list.alarms.iter().map(|a| (a.alarm, a.member_id)).collect() })
    }

    /// The persisted form.
    pub(crate) fn encode(&self) -> Vec<u8> {
        AlarmList { alarms: self.get(AlarmType::None) }.encode_to_vec()
    }

    /// Every active alarm of type `alarm` (`None`: of every type), sorted.
    pub fn get(&self, alarm: AlarmType) -> Vec<AlarmMember> {
        self.set
            .iter()
            .filter(|(a, _)| alarm == AlarmType::None || *a == alarm as i32)
            .map(|&(alarm, member_id)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// True when an alarm of type `alarm` is active for some member.
    pub fn has(&self, alarm: AlarmType) -> bool {
        self.set.iter().any(|(a, _)| *a == alarm as i32)
    }

    /// True when no alarm is active.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Applies an ACTIVATE or DEACTIVATE request (GET changes nothing); returns the alarms
    /// the response lists, as etcd's applier does: the alarm activated (also when it was
    /// already active) or the one deactivated (none when it was not active), and whether
    /// the set changed. ACTIVATE of `NONE` does nothing.
    pub(crate) fn apply(&mut self, r: &AlarmRequest) -> (Vec<AlarmMember>, bool) {
        let member = AlarmMember { member_id: r.member_id, alarm: r.alarm };
        match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Activate) if r.alarm != AlarmType::None as i32 => {
                let changed = self.set.insert((r.alarm, r.member_id));
                (vec![member], changed)
            }
            Ok(AlarmAction::Deactivate) if self.set.remove(&(r.alarm, r.member_id)) => (vec![member], true),
            _ => (Vec::new(), false),
        }
    }
}

/// True for the requests a NOSPACE alarm refuses (etcd's `applierV3Capped`: a cost above
/// zero in `quota.go`): Put, LeaseGrant, and a Txn with a put among the top-level
/// operations of either branch (etcd does not look into nested Txns, nor does this).
pub fn adds_data(req: &Request) -> bool {
    match req {
        Request::Put(_) | Request::LeaseGrant(_) => true,
        Request::Txn(t) => t.success.iter().chain(&t.failure).any(|op| matches!(op.request, Some(Op::RequestPut(_)))),
        _ => false,
    }
}

/// True for the requests a CORRUPT alarm refuses (etcd's `applierV3Corrupt`): Put,
/// DeleteRange, every Txn that reaches the log, Compaction, LeaseGrant, LeaseRevoke and
/// cairn's batched lease expiry (etcd expires a lease with a LeaseRevoke).
pub fn refused_when_corrupt(req: &Request) -> bool {
    matches!(
        req,
        Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Txn(_)
            | Request::Compaction(_)
            | Request::LeaseGrant(_)
            | Request::LeaseRevoke(_)
            | Request::LeaseExpire(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest { action: action as i32, member_id, alarm: alarm as i32 }
    }

    #[test]
    fn activate_deactivate_answers_as_etcd() {
        let mut a = Alarms::default();
        let (resp, changed) = a.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace));
        assert!(changed);
        assert_eq!(resp, vec![AlarmMember { member_id: 7, alarm: AlarmType::Nospace as i32 }]);
        // already active: listed again, nothing changes
        let (resp, changed) = a.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace));
        assert!(!changed);
        assert_eq!(resp.len(), 1);
        a.apply(&req(AlarmAction::Activate, 3, AlarmType::Nospace));
        a.apply(&req(AlarmAction::Activate, 9, AlarmType::Corrupt));
        assert_eq!(a.get(AlarmType::None).iter().map(|m| m.member_id).collect::<Vec<_>>(), vec![3, 7, 9]);
        assert_eq!(a.get(AlarmType::Corrupt).len(), 1);
        // deactivating an alarm that is not active answers none
        let (resp, changed) = a.apply(&req(AlarmAction::Deactivate, 5, AlarmType::Nospace));
        assert!(resp.is_empty() && !changed);
        a.apply(&req(AlarmAction::Deactivate, 7, AlarmType::Nospace));
        assert!(a.has(AlarmType::Nospace));
        a.apply(&req(AlarmAction::Deactivate, 3, AlarmType::Nospace));
        assert!(!a.has(AlarmType::Nospace));
        assert!(a.apply(&req(AlarmAction::Activate, 1, AlarmType::None)).0.is_empty());
        assert_eq!(Alarms::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn only_writes_that_add_data_are_capped() {
        use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
        assert!(adds_data(&Request::Put(PutRequest::default())));
        assert!(!adds_data(&Request::DeleteRange(DeleteRangeRequest::default())));
        let put = RequestOp { request: Some(Op::RequestPut(PutRequest::default())) };
        let del = RequestOp { request: Some(Op::RequestDeleteRange(DeleteRangeRequest::default())) };
        assert!(adds_data(&Request::Txn(TxnRequest { failure: vec![del.clone(), put], ..Default::default() })));
        assert!(!adds_data(&Request::Txn(TxnRequest { success: vec![del], ..Default::default() })));
    }

    #[test]
    fn corrupt_refuses_what_etcds_corrupt_applier_refuses() {
        use cairn_proto::cairnpb::LeaseExpireRequest;
        use cairn_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, TxnRequest};
        for refused in [
            Request::Put(PutRequest::default()),
            Request::DeleteRange(DeleteRangeRequest::default()),
            Request::Txn(TxnRequest::default()),
            Request::Compaction(CompactionRequest::default()),
            Request::LeaseGrant(LeaseGrantRequest::default()),
            Request::LeaseRevoke(LeaseRevokeRequest::default()),
            Request::LeaseExpire(LeaseExpireRequest::default()),
        ] {
            assert!(refused_when_corrupt(&refused), "{refused:?}");
        }
        for allowed in [Request::Alarm(AlarmRequest::default()), Request::LeaseCheckpoint(LeaseCheckpointRequest::default())] {
            assert!(!refused_when_corrupt(&allowed), "{allowed:?}");
        }
    }
}
