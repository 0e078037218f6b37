//! `check`: validates a config file (and optionally sample events against the mapping).
