//! [`HeaderList`]: the (name, value) header pairs of a capture, in order, in one text buffer.
//!
//! The request path copies a request's headers (and, with captures on, the response's) for the
//! observer, which redacts them, stores them and frees them on its own thread. As a list of
//! owned string pairs that was two allocations a header (some thirty for a coding agent's
//! request), each freed on another thread than the one that made it, which is the allocator's
//! slow path. Here a list is two allocations whatever its length: the text of every name and
//! value back to back, and where each ends. It serializes as the list of pairs did (`[[name,
//! value], ...]`), so the stored and served capture documents are unchanged.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Header (name, value) pairs in order; names as they came (the server's are lower case).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderList {
    /// Every name and value back to back.
    text: String,
    /// For each pair, where its name and its value end in `text`.
    ends: Vec<(u32, u32)>,
}

impl HeaderList {
    pub fn new() -> HeaderList {
        HeaderList::default()
    }

    /// An empty list with room for `pairs` pairs of `text_bytes` bytes in all.
    pub fn with_capacity(pairs: usize, text_bytes: usize) -> HeaderList {
        HeaderList {
            text: String::with_capacity(text_bytes),
            ends: Vec::with_capacity(pairs),
        }
    }

    /// Add a pair at the end. A list is at most 4 GiB of text (far above any header limit:
    /// hyper reads at most megabytes of them); a pair past that is left out, and a smaller one
    /// after it may still fit.
    pub fn push(&mut self, name: &str, value: &str) {
        let name_end = self.text.len() + name.len();
        let value_end = name_end + value.len();
        let (Ok(n), Ok(v)) = (u32::try_from(name_end), u32::try_from(value_end)) else {
            return;
        };
        self.text.push_str(name);
        self.text.push_str(value);
        self.ends.push((n, v));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The pairs in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            list: self,
            next: 0,
            start: 0,
        }
    }

    /// The value of the first pair named `name` (ASCII case-insensitive). Names are compared
    /// as bytes, lengths first: only the value found is made a `str` again (each `str` slice
    /// checks its ends for character boundaries).
    pub fn get(&self, name: &str) -> Option<&str> {
        let bytes = self.text.as_bytes();
        let mut start = 0;
        for &(n, v) in &self.ends {
            let (n, v) = (n as usize, v as usize);
            if n - start == name.len() && bytes[start..n].eq_ignore_ascii_case(name.as_bytes()) {
                return self.text.get(n..v);
            }
            start = v;
        }
        None
    }

    /// The values' bytes, in order.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> + Clone {
        let bytes = self.text.as_bytes();
        (self.ends.iter()).map(move |&(n, v)| &bytes[n as usize..v as usize])
    }

    /// Bytes of names and values in all.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Replace values where `f(name, value)` gives a new one; the list is rebuilt only if one
    /// does.
    pub fn replace_values(&mut self, mut f: impl FnMut(&str, &str) -> Option<String>) {
        let mut out: Option<HeaderList> = None;
        for (i, (name, value)) in self.iter().enumerate() {
            match (f(name, value), &mut out) {
                (Some(new), Some(o)) => o.push(name, &new),
                (Some(new), None) => {
                    let mut o = HeaderList::with_capacity(self.len(), self.text.len() + new.len());
                    for (n, v) in self.iter().take(i) {
                        o.push(n, v);
                    }
                    o.push(name, &new);
                    out = Some(o);
                }
                (None, Some(o)) => o.push(name, value),
                (None, None) => {}
            }
        }
        if let Some(o) = out {
            *self = o;
        }
    }
}

/// The pairs of a [`HeaderList`], in order.
#[derive(Clone)]
pub struct Iter<'a> {
    list: &'a HeaderList,
    next: usize,
    /// Where the next pair's name begins.
    start: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let &(n, v) = self.list.ends.get(self.next)?;
        let (n, v) = (n as usize, v as usize);
        // Every boundary was a string's end when it was pushed: these never fail.
        let pair = self
            .list
            .text
            .get(self.start..v)?
            .split_at_checked(n - self.start)?;
        self.next += 1;
        self.start = v;
        Some(pair)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.list.ends.len() - self.next;
        (left, Some(left))
    }
}

impl<'a> IntoIterator for &'a HeaderList {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> HeaderList {
        let mut list = HeaderList::new();
        for (n, v) in pairs {
            list.push(n.as_ref(), v.as_ref());
        }
        list
    }
}

impl fmt::Debug for HeaderList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for HeaderList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for pair in self {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HeaderList, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = HeaderList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of [name, value] pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HeaderList, A::Error> {
                let mut list = HeaderList::new();
                while let Some((n, v)) = seq.next_element::<(String, String)>()? {
                    list.push(&n, &v);
                }
                Ok(list)
            }
        }
        d.deserialize_seq(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(l: &HeaderList) -> Vec<(&str, &str)> {
        l.iter().collect()
    }

    #[test]
    fn pairs_come_back_in_order_with_repeats_and_empties() {
        let list: HeaderList = [
            ("content-type", "application/json"),
            ("x-empty", ""),
            ("", "odd"),
            ("accept", "a"),
            ("Accept", "ü-b"),
        ]
        .into_iter()
        .collect();
        assert_eq!(list.len(), 5);
        assert_eq!(
            pairs(&list),
            [
                ("content-type", "application/json"),
                ("x-empty", ""),
                ("", "odd"),
                ("accept", "a"),
                ("Accept", "ü-b"),
            ]
        );
        assert_eq!(list.get("ACCEPT"), Some("a"));
        assert_eq!(list.get("x-empty"), Some(""));
        assert_eq!(list.get("missing"), None);
        assert_eq!(list.get(""), Some("odd"));
        let values: Vec<&[u8]> = list.values().collect();
        assert_eq!(
            values,
            [
                &b"application/json"[..],
                b"",
                b"odd",
                b"a",
                "ü-b".as_bytes()
            ]
        );
        assert_eq!(list.iter().size_hint(), (5, Some(5)));
        assert!(HeaderList::new().is_empty());
        assert_eq!(HeaderList::new().iter().next(), None);
    }

    #[test]
    fn values_are_replaced_only_where_asked() {
        let mut list: HeaderList = [("a", "1"), ("authorization", "Bearer x"), ("c", "3")]
            .into_iter()
            .collect();
        let before = list.clone();
        list.replace_values(|_, _| None);
        assert_eq!(list, before);
        list.replace_values(|n, v| {
            (n == "authorization").then(|| format!("{}[redacted]", &v[..7]))
        });
        assert_eq!(
            pairs(&list),
            [
                ("a", "1"),
                ("authorization", "Bearer [redacted]"),
                ("c", "3")
            ]
        );
        list.replace_values(|n, _| (n != "authorization").then(String::new));
        assert_eq!(
            pairs(&list),
            [("a", ""), ("authorization", "Bearer [redacted]"), ("c", "")]
        );
    }

    #[test]
    fn it_serializes_as_a_list_of_pairs() {
        let list: HeaderList = [("a", "1"), ("b", "\"q\"")].into_iter().collect();
        let json = serde_json::to_string(&list).unwrap();
        let as_vec: Vec<(String, String)> = list
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(json, serde_json::to_string(&as_vec).unwrap());
        assert_eq!(serde_json::from_str::<HeaderList>(&json).unwrap(), list);
        assert_eq!(format!("{list:?}"), r#"[("a", "1"), ("b", "\"q\"")]"#);
        assert!(serde_json::from_str::<HeaderList>(r#"[["a"]]"#).is_err());
        assert!(serde_json::from_str::<HeaderList>(r#"{"a":"b"}"#).is_err());
    }
}
