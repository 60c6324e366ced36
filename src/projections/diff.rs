//! What changed in the unified list between two instants: contacts added, removed and renamed,
//! meta-contacts formed or joined (merged), dissolved or left (split), and renamed.

use std::collections::BTreeMap;

use crate::domain::ids::{ContactId, MetaContactId};
use crate::projections::contacts::{ContactEntry, ContactList};

/// A contact whose upstream name changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRename {
    pub contact: ContactEntry,
    pub previous: Option<String>,
}

/// Contacts that joined (merged) or left (split) one meta-contact; `whole` when the
/// meta-contact itself appeared or was dissolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub meta_contact_id: MetaContactId,
    pub name: String,
    pub contact_ids: Vec<ContactId>,
    pub whole: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContactRename {
    pub meta_contact_id: MetaContactId,
    pub name: String,
    pub previous: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactsDiff {
    /// On the roster at the end, not at the start.
    pub added: Vec<ContactEntry>,
    /// On the roster at the start, not at the end (as the end shows it: dormant, or gone).
    pub removed: Vec<ContactEntry>,
    pub renamed: Vec<ContactRename>,
    pub merged: Vec<MembershipChange>,
    pub split: Vec<MembershipChange>,
    pub meta_contacts_renamed: Vec<MetaContactRename>,
}

/// Every contact of a list (single or member), by id.
fn contacts_of(list: &ContactList) -> BTreeMap<ContactId, &ContactEntry> {
    list.single_contacts
        .iter()
        .chain(list.meta_contacts.iter().flat_map(|m| m.members.iter()))
        .map(|c| (c.contact_id, c))
        .collect()
}

/// The changes that turn `from` into `to`.
pub fn diff(from: &ContactList, to: &ContactList) -> ContactsDiff {
    let (before, after) = (contacts_of(from), contacts_of(to));
    fn listed(c: &&ContactEntry) -> bool {
        c.departure.is_none()
    }
    let mut result = ContactsDiff::default();
    for (id, now) in &after {
        match before.get(id).filter(|c| listed(c)) {
            None if listed(now) => result.added.push((*now).clone()),
            Some(then) if listed(now) && then.display_name != now.display_name => {
                result.renamed.push(ContactRename {
                    contact: (*now).clone(),
                    previous: then.display_name.clone(),
                })
            }
            _ => {}
        }
    }
    for (id, then) in &before {
        if listed(then) && !after.get(id).is_some_and(listed) {
            result.removed.push(
                after
                    .get(id)
                    .map_or_else(|| (*then).clone(), |c| (*c).clone()),
            );
        }
    }
    let members = |list: &ContactList| -> BTreeMap<MetaContactId, (String, Vec<ContactId>)> {
        list.meta_contacts
            .iter()
            .map(|m| {
                (
                    m.meta_contact_id,
                    (
                        m.name.clone(),
                        m.members.iter().map(|c| c.contact_id).collect(),
                    ),
                )
            })
            .collect()
    };
    let (metas_before, metas_after) = (members(from), members(to));
    for (id, (name, now)) in &metas_after {
        let then = metas_before.get(id);
        let joined: Vec<ContactId> = now
            .iter()
            .filter(|c| !then.is_some_and(|(_, t)| t.contains(c)))
            .copied()
            .collect();
        if !joined.is_empty() {
            result.merged.push(MembershipChange {
                meta_contact_id: *id,
                name: name.clone(),
                contact_ids: joined,
                whole: then.is_none(),
            });
        }
        if let Some((previous, _)) = then.filter(|(previous, _)| previous != name) {
            result.meta_contacts_renamed.push(MetaContactRename {
                meta_contact_id: *id,
                name: name.clone(),
                previous: previous.clone(),
            });
        }
    }
    for (id, (name, then)) in &metas_before {
        let now = metas_after.get(id);
        let left: Vec<ContactId> = then
            .iter()
            .filter(|c| !now.is_some_and(|(_, n)| n.contains(c)))
            .copied()
            .collect();
        if !left.is_empty() {
            result.split.push(MembershipChange {
                meta_contact_id: *id,
                name: name.clone(),
                contact_ids: left,
                whole: now.is_none(),
            });
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::ids::AccountId;
    use crate::domain::user::DepartureReason;
    use crate::projections::contacts::{ContactDeparture, MetaContactEntry};

    fn contact(n: u128, name: &str, meta: Option<u128>) -> ContactEntry {
        ContactEntry {
            contact_id: ContactId(Uuid::from_u128(n)),
            account_id: AccountId(Uuid::from_u128(100)),
            protocol: "XMPP".into(),
            handle: format!("c{n}@example.org"),
            display_name: Some(name.into()),
            meta_contact_id: meta.map(|m| MetaContactId(Uuid::from_u128(m))),
            is_new: false,
            departure: None,
        }
    }

    fn list(
        singles: Vec<ContactEntry>,
        metas: Vec<(u128, &str, Vec<ContactEntry>)>,
    ) -> ContactList {
        ContactList {
            single_contacts: singles,
            meta_contacts: metas
                .into_iter()
                .map(|(id, name, members)| MetaContactEntry {
                    meta_contact_id: MetaContactId(Uuid::from_u128(id)),
                    name: name.into(),
                    members,
                })
                .collect(),
        }
    }

    #[test]
    fn nothing_changed_is_an_empty_diff() {
        let a = list(
            vec![contact(1, "Ann", None)],
            vec![(
                9,
                "Pals",
                vec![contact(2, "Bo", Some(9)), contact(3, "Cy", Some(9))],
            )],
        );
        assert_eq!(diff(&a, &a), ContactsDiff::default());
    }

    #[test]
    fn additions_removals_renames_merges_and_splits_are_told_apart() {
        let from = list(
            vec![
                contact(1, "Ann", None),
                contact(2, "Bo", None),
                contact(3, "Cy", None),
            ],
            vec![(
                8,
                "Old",
                vec![contact(4, "Di", Some(8)), contact(5, "Ed", Some(8))],
            )],
        );
        let mut dormant = contact(5, "Ed", Some(8));
        dormant.departure = Some(ContactDeparture {
            reason: DepartureReason::RemovedUpstream,
            since: None,
        });
        let to = list(
            vec![contact(1, "Annie", None), contact(6, "Fay", None)],
            vec![
                (8, "Older", vec![contact(4, "Di", Some(8)), dormant.clone()]),
                (
                    9,
                    "Pair",
                    vec![contact(2, "Bo", Some(9)), contact(3, "Cy", Some(9))],
                ),
            ],
        );
        let d = diff(&from, &to);
        assert_eq!(
            d.added.iter().map(|c| c.contact_id).collect::<Vec<_>>(),
            [ContactId(Uuid::from_u128(6))]
        );
        assert_eq!(d.removed, vec![dormant]);
        assert_eq!(d.renamed.len(), 1);
        assert_eq!(d.renamed[0].previous.as_deref(), Some("Ann"));
        assert_eq!(d.merged.len(), 1);
        assert!(d.merged[0].whole);
        assert_eq!(d.merged[0].contact_ids.len(), 2);
        assert!(d.split.is_empty(), "a dormant member keeps its place");
        assert_eq!(d.meta_contacts_renamed[0].previous, "Old");

        // And back: the pair is split, Fay removed, Cy... still there as a single.
        let back = diff(&to, &from);
        assert_eq!(back.split.len(), 1);
        assert!(back.split[0].whole);
        assert_eq!(back.removed.len(), 1);
        assert_eq!(back.added.len(), 1, "Ed is back on the roster");
    }
}
