//! `FixedVec`: a vector with inline, fixed capacity, for data gathered before
//! the heap exists (the platform description parsed from the host DTB).
#![forbid(unsafe_code)]

/// Up to `N` values of `T`, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FixedVec<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> Default for FixedVec<T, N> {
    fn default() -> Self {
        Self {
            items: [T::default(); N],
            len: 0,
        }
    }
}

impl<T: Copy + Default, const N: usize> FixedVec<T, N> {
    /// An empty vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `value`; gives it back if the vector is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = value;
                self.len += 1;
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Empties it (the slots keep their old values, unseen).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The stored values.
    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    /// The stored values, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }

    /// Removes the value at `index`, shifting the rest down.
    pub fn remove(&mut self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        let value = self.items[index];
        self.items.copy_within(index + 1..self.len, index);
        self.len -= 1;
        Some(value)
    }

    /// Inserts `value` at `index`, shifting the rest up; gives it back if the
    /// vector is full or `index` is past the end.
    pub fn insert(&mut self, index: usize, value: T) -> Result<(), T> {
        if self.len == N || index > self.len {
            return Err(value);
        }
        self.items.copy_within(index..self.len, index + 1);
        self.items[index] = value;
        self.len += 1;
        Ok(())
    }

    /// Number of stored values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Iterates over the stored values.
    pub fn iter(&self) -> core::slice::Iter<'_, T> {
        self.as_slice().iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_empties_for_reuse() {
        let mut v: FixedVec<u8, 2> = FixedVec::new();
        assert_eq!(v.push(1), Ok(()));
        assert_eq!(v.push(2), Ok(()));
        v.clear();
        assert!(v.is_empty());
        assert_eq!(v.push(3), Ok(()));
        assert_eq!(v.as_slice(), &[3]);
    }

    #[test]
    fn push_insert_remove_respect_capacity() {
        let mut v: FixedVec<u32, 3> = FixedVec::new();
        assert_eq!(v.push(1), Ok(()));
        assert_eq!(v.push(3), Ok(()));
        assert_eq!(v.insert(1, 2), Ok(()));
        assert_eq!(v.push(4), Err(4));
        assert_eq!(v.as_slice(), &[1, 2, 3]);
        assert_eq!(v.remove(0), Some(1));
        assert_eq!(v.as_slice(), &[2, 3]);
        assert_eq!(v.remove(5), None);
        assert_eq!(v.insert(5, 9), Err(9));
    }
}
