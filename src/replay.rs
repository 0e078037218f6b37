//! `replay`: backfill a window of a topic.
