//! The run order of queued jobs: owners take turns, and each owner's jobs keep their order.
//!
//! A strict first-in first-out queue lets one owner's burst of a thousand jobs hold back
//! everyone who submits after it. Here the queue is a ring of owners, each with its own
//! first-in first-out line: the next job to run is the oldest job of the owner whose turn it
//! is, and that owner then goes to the back of the ring. An owner joins the ring at the back
//! when its first job arrives (first come, first served among owners), and leaves it when its
//! line is empty. So with `n` owners waiting, a newcomer's job runs after at most `n - 1`
//! others, whatever the size of anyone's burst.

use std::collections::{HashMap, VecDeque};

/// Owners' lines and whose turn comes next.
#[derive(Debug)]
pub(crate) struct FairQueue<T> {
    lines: HashMap<String, VecDeque<T>>,
    /// Owners with a job waiting; the front one's turn is next.
    turns: VecDeque<String>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            lines: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Jobs waiting, all owners together.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Jobs waiting in `owner`'s line.
    pub(crate) fn len_of(&self, owner: &str) -> usize {
        self.lines
            .get(&maestro_core::identity::normalize(owner))
            .map_or(0, VecDeque::len)
    }

    /// Put `item` at the back of `owner`'s line (owners compared as people read them).
    pub(crate) fn push(&mut self, owner: &str, item: T) {
        let owner = maestro_core::identity::normalize(owner);
        let line = self.lines.entry(owner.clone()).or_default();
        if line.is_empty() {
            self.turns.push_back(owner);
        }
        line.push_back(item);
        self.len += 1;
    }

    /// The next job to run: the oldest of the owner whose turn it is.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let owner = self.turns.pop_front()?;
        let line = self.lines.get_mut(&owner)?;
        let item = line.pop_front();
        if line.is_empty() {
            self.lines.remove(&owner);
        } else {
            self.turns.push_back(owner);
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Whether a job that matches waits, in any line.
    pub(crate) fn any(&self, mut matches: impl FnMut(&T) -> bool) -> bool {
        self.lines
            .values()
            .any(|line| line.iter().any(&mut matches))
    }

    /// Call `each` with every job that waits, line after line.
    pub(crate) fn for_each(&self, mut each: impl FnMut(&T)) {
        for item in self.lines.values().flatten() {
            each(item);
        }
    }

    /// Take out the first job that matches, wherever it waits.
    pub(crate) fn remove_first(&mut self, mut matches: impl FnMut(&T) -> bool) -> Option<T> {
        let (owner, index) = self.lines.iter().find_map(|(owner, line)| {
            line.iter()
                .position(&mut matches)
                .map(|index| (owner.clone(), index))
        })?;
        let line = self.lines.get_mut(&owner)?;
        let item = line.remove(index)?;
        if line.is_empty() {
            self.lines.remove(&owner);
            self.turns.retain(|waiting| *waiting != owner);
        }
        self.len -= 1;
        Some(item)
    }

    /// How many jobs run before the newest job of `owner` (which must have one waiting).
    pub(crate) fn ahead_of_newest(&self, owner: &str) -> usize {
        let owner = maestro_core::identity::normalize(owner);
        let Some(own) = self.lines.get(&owner).map(VecDeque::len) else {
            return self.len;
        };
        // It is the `own`-th job of its line: every owner whose turn comes before its owner's
        // gets `own` turns before it, every owner after gets `own - 1`.
        let rank = own - 1;
        let mut ahead = rank;
        let mut before_owner = true;
        for waiting in &self.turns {
            if *waiting == owner {
                before_owner = false;
                continue;
            }
            let count = self.lines.get(waiting).map_or(0, VecDeque::len);
            ahead += count.min(if before_owner { rank + 1 } else { rank });
        }
        ahead
    }
}

#[cfg(test)]
mod tests {
    use super::FairQueue;

    fn drain(queue: &mut FairQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop()).collect()
    }

    #[test]
    fn owners_take_turns_and_each_keeps_its_order() {
        let mut queue = FairQueue::default();
        for item in ["a1", "a2", "a3", "a4"] {
            queue.push("ana", item);
        }
        queue.push("bo", "b1");
        queue.push("bo", "b2");
        queue.push("cy", "c1");
        assert_eq!(queue.len(), 7);
        assert_eq!(
            drain(&mut queue),
            ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
        );
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn one_owner_alone_is_first_in_first_out() {
        let mut queue = FairQueue::default();
        for item in ["1", "2", "3"] {
            queue.push("ana", item);
        }
        assert_eq!(drain(&mut queue), ["1", "2", "3"]);
    }

    #[test]
    fn a_newcomer_waits_at_most_one_turn_of_each_owner_ahead() {
        let mut queue = FairQueue::default();
        for _ in 0..1000 {
            queue.push("burst", "burst");
        }
        queue.push("bo", "bo");
        assert_eq!(queue.ahead_of_newest("bo"), 1);
        assert_eq!(queue.pop(), Some("burst"));
        assert_eq!(queue.pop(), Some("bo"));
    }

    #[test]
    fn owners_are_compared_as_people_read_them() {
        let mut queue = FairQueue::default();
        queue.push("ana", "a1");
        queue.push("bo", "b1");
        queue.push("ANA", "a2");
        assert_eq!(drain(&mut queue), ["a1", "b1", "a2"]);
    }

    #[test]
    fn positions_match_the_order_jobs_leave_in() {
        let mut queue = FairQueue::default();
        for (owner, item) in [
            ("ana", "a1"),
            ("ana", "a2"),
            ("bo", "b1"),
            ("ana", "a3"),
            ("cy", "c1"),
            ("bo", "b2"),
            ("cy", "c2"),
        ] {
            queue.push(owner, item);
        }
        let expected: Vec<(&str, usize)> = [("ana", "a3"), ("bo", "b2"), ("cy", "c2")]
            .into_iter()
            .map(|(owner, newest)| (newest, queue.ahead_of_newest(owner)))
            .collect();
        let order = drain(&mut queue);
        assert_eq!(order, ["a1", "b1", "c1", "a2", "b2", "c2", "a3"]);
        for (item, ahead) in expected {
            let at = order.iter().position(|left| *left == item).unwrap();
            assert_eq!(at, ahead, "{item} in {order:?}");
        }
    }

    #[test]
    fn removing_an_owners_last_job_takes_it_out_of_the_turns() {
        let mut queue = FairQueue::default();
        queue.push("ana", "a1");
        queue.push("bo", "b1");
        queue.push("ana", "a2");
        assert_eq!(queue.remove_first(|item| *item == "b1"), Some("b1"));
        assert_eq!(queue.remove_first(|item| *item == "b1"), None);
        assert_eq!(queue.len(), 2);
        assert_eq!(drain(&mut queue), ["a1", "a2"]);
    }
}
