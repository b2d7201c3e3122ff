//! The connections the reactor holds, by token: index in the low 32 bits,
//! generation in the high 32, so that an event, a timer entry or stolen
//! work for a connection that closed (its slot reused) finds nothing.

/// A slab of `T` with generation-carrying tokens.
#[derive(Debug)]
pub(crate) struct Registry<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

fn split(token: u64) -> (u32, usize) {
    ((token >> 32) as u32, token as u32 as usize)
}

impl<T> Registry<T> {
    /// Stores `value`; its token.
    pub(crate) fn insert(&mut self, value: T) -> u64 {
        self.len += 1;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.0 = slot.0.wrapping_add(1);
        slot.1 = Some(value);
        (u64::from(slot.0) << 32) | u64::from(index)
    }

    pub(crate) fn get(&self, token: u64) -> Option<&T> {
        let (generation, index) = split(token);
        match self.slots.get(index) {
            Some((g, Some(value))) if *g == generation => Some(value),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, token: u64) -> Option<T> {
        let (generation, index) = split(token);
        match self.slots.get_mut(index) {
            Some((g, value @ Some(_))) if *g == generation => {
                self.len -= 1;
                self.free.push(index as u32);
                value.take()
            }
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The tokens of every value held.
    pub(crate) fn tokens(&self) -> Vec<u64> {
        let live = self.slots.iter().enumerate().filter(|(_, (_, v))| v.is_some());
        live.map(|(i, (g, _))| (u64::from(*g) << 32) | i as u64).collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_token() {
        let mut r = Registry::default();
        let a = r.insert("a");
        assert_eq!(r.get(a), Some(&"a"));
        assert_eq!(r.remove(a), Some("a"));
        assert_eq!(r.remove(a), None, "removed once");
        let b = r.insert("b");
        assert_eq!(a as u32, b as u32, "the slot is reused");
        assert_eq!(r.get(a), None, "a stale token finds nothing");
        assert_eq!(r.get(b), Some(&"b"));
        assert_eq!(r.len(), 1);
        assert_eq!(r.tokens(), [b]);
    }

    #[test]
    fn tokens_never_collide_with_the_reserved_ones() {
        let mut r = Registry::default();
        let tokens: Vec<u64> = (0..1000).map(|i| r.insert(i)).collect();
        assert!(tokens.iter().all(|&t| t < u64::MAX - 2));
        assert_eq!(r.get(u64::MAX), None);
        assert_eq!(r.get(u64::MAX - 1), None);
    }
}
