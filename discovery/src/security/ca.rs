//! Pilotfish's certificate authority (to be written).
