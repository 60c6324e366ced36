//! Presence: how available a contact is, and which member speaks for a meta-contact.

/// How available a contact is. The declaration order is the rule: least available first, so
/// the derived `Ord` ranks availabilities and a greater value means "more reachable".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Availability {
    Offline,
    DoNotDisturb,
    ExtendedAway,
    Away,
    Online,
    Chat,
}

/// What a contact was last seen as on its own network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub availability: Availability,
    pub status: Option<String>,
}

/// The most available of a meta-contact's `members`, each given with its presence if known,
/// or `None` when no member's presence is known.
///
/// A member whose presence is unknown is never chosen, not even over an offline one: unknown
/// means its account is not online, so nothing can be said about the person there. Ties go to
/// the earliest member so the choice stays put while presences do not change.
pub fn most_available<'p, M>(
    members: impl IntoIterator<Item = (M, Option<&'p Presence>)>,
) -> Option<(M, &'p Presence)> {
    members
        .into_iter()
        .filter_map(|(member, presence)| presence.map(|p| (member, p)))
        .fold(None, |best, (member, presence)| match best {
            Some((_, chosen)) if chosen.availability >= presence.availability => best,
            _ => Some((member, presence)),
        })
}

#[cfg(test)]
mod tests {
    use super::{most_available, Availability, Presence};

    const LEAST_TO_MOST: [Availability; 6] = [
        Availability::Offline,
        Availability::DoNotDisturb,
        Availability::ExtendedAway,
        Availability::Away,
        Availability::Online,
        Availability::Chat,
    ];

    fn seen(availability: Availability) -> Presence {
        Presence {
            availability,
            status: None,
        }
    }

    #[test]
    fn availabilities_rank_from_offline_to_chat() {
        for pair in LEAST_TO_MOST.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{:?} should rank below {:?}",
                pair[0],
                pair[1]
            );
        }
        let mut shuffled = [
            Availability::Away,
            Availability::Chat,
            Availability::Offline,
            Availability::Online,
            Availability::ExtendedAway,
            Availability::DoNotDisturb,
        ];
        shuffled.sort();
        assert_eq!(shuffled, LEAST_TO_MOST);
    }

    #[test]
    fn the_most_available_member_wins_whatever_its_place() {
        for (i, &top) in LEAST_TO_MOST.iter().enumerate() {
            let presences: Vec<Presence> = LEAST_TO_MOST[..=i].iter().map(|&a| seen(a)).collect();
            // Most available last, then first: the position must not matter.
            let ascending = most_available(presences.iter().enumerate().map(|(n, p)| (n, Some(p))));
            assert_eq!(ascending.map(|(n, p)| (n, p.availability)), Some((i, top)));
            let descending = most_available(
                presences
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(n, p)| (n, Some(p))),
            );
            assert_eq!(descending.map(|(n, p)| (n, p.availability)), Some((i, top)));
        }
    }

    #[test]
    fn ties_go_to_the_earliest_member() {
        let first = Presence {
            availability: Availability::Away,
            status: Some("lunch".to_owned()),
        };
        let second = Presence {
            availability: Availability::Away,
            status: Some("meeting".to_owned()),
        };
        let offline = seen(Availability::Offline);
        let chosen = most_available([
            ("offline", Some(&offline)),
            ("first", Some(&first)),
            ("second", Some(&second)),
        ]);
        assert_eq!(chosen, Some(("first", &first)));
    }

    #[test]
    fn unknown_presence_is_never_chosen() {
        let offline = seen(Availability::Offline);
        let chosen = most_available([
            ("unknown", None),
            ("offline", Some(&offline)),
            ("gone", None),
        ]);
        assert_eq!(chosen, Some(("offline", &offline)));
    }

    #[test]
    fn no_known_presence_means_none() {
        assert_eq!(most_available([("a", None), ("b", None)]), None);
        assert_eq!(most_available(Vec::<(u8, Option<&Presence>)>::new()), None);
    }
}
