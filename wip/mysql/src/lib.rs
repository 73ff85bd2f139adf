//! mysql decoder plugin (in development).
