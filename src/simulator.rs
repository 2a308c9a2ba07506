//! Simulated management API (being written).
