//! The queue: file format and intake journal (being written).
