//! A small deterministic generator for the crate's randomized tests (xorshift64*), so that a
//! failure names its seed and case.

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    pub(crate) fn chance(&mut self, in_100: usize) -> bool {
        self.below(100) < in_100
    }

    /// One to three single-byte edits of a JSON document (a byte removed, replaced or inserted,
    /// drawn from what JSON's grammar turns on), so that a generated document is also tried
    /// broken.
    pub(crate) fn edit(&mut self, doc: &mut Vec<u8>) {
        const EDITS: &[u8] = b"{}[]\":,\\ 0123456789.eE+-ntfu\x01";
        for _ in 0..1 + self.below(3) {
            let at = self.below(doc.len() + 1);
            match self.below(3) {
                0 if at < doc.len() => {
                    doc.remove(at);
                }
                1 if at < doc.len() => doc[at] = EDITS[self.below(EDITS.len())],
                _ => doc.insert(at, EDITS[self.below(EDITS.len())]),
            }
        }
    }
}
