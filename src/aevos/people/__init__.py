"""People in the loop: the reviewer inbox of human tasks and their feedback, and the
approvals of gated actions (promotions) that need a second person."""
