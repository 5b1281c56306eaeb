//! The realm's maps and sets: std's, with foldhash's seeded fast hasher.
//! A small call hashes a dozen ids and a URI on its way through the realm;
//! with SipHash that was 4.5 % of the router's CPU. foldhash seeds each
//! map at random, so clients cannot aim collisions at a map they cannot
//! see the seed of.

/// A `HashMap` with foldhash.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with foldhash.
pub type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
