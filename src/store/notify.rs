//! Registry change notifications (work in progress, issue #4).
