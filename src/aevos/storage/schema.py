"""The kernel's tables, as SQLAlchemy Core metadata.

Timestamps are UNIX epoch seconds (float, UTC by definition) so both backends compare and
index them the same way without timezone conversions. Migrations under ``migrations/`` must
produce exactly this schema; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

runs = Table(
    "aevos_runs",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("tenant", String(64), nullable=False, server_default="default"),
    Column("workflow", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("idempotency_key", String(200), nullable=True),
    Column("input", Text, nullable=True),
    Column("input_ref", String(64), nullable=True),
    Column("output", Text, nullable=True),
    Column("output_ref", String(64), nullable=True),
    Column("error", Text, nullable=True),
    Column("code_version", String(64), nullable=False),
    Column("parent_run_id", String(200), nullable=True),
    Column("owner", String(100), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("wake_at", Float, nullable=True),
    Column("executions", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("claimed_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
)
Index("ix_aevos_runs_claim", runs.c.queue, runs.c.status, runs.c.priority, runs.c.created_at)
# Partial (revision 0019): most runs have no idempotency key, no parent, and no owner once
# they end, and an index entry nothing looks up is a page written at every start and finish.
# Every lookup through them compares the column with ``=`` or ``IN``, which implies IS NOT
# NULL to both planners; INSERT .. ON CONFLICT DO NOTHING (no target) still honours the
# partial unique index on both backends.
_KEYED = runs.c.idempotency_key.is_not(None)
Index(
    "uq_aevos_runs_idempotency",
    runs.c.tenant,
    runs.c.idempotency_key,
    unique=True,
    sqlite_where=_KEYED,
    postgresql_where=_KEYED,
)
_OWNED = runs.c.owner.is_not(None)
Index(
    "ix_aevos_runs_owner",
    runs.c.owner,
    runs.c.status,
    sqlite_where=_OWNED,
    postgresql_where=_OWNED,
)
_CHILD = runs.c.parent_run_id.is_not(None)
Index("ix_aevos_runs_parent", runs.c.parent_run_id, sqlite_where=_CHILD, postgresql_where=_CHILD)
Index("ix_aevos_runs_created", runs.c.created_at)

steps = Table(
    "aevos_steps",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("output", Text, nullable=True),
    Column("output_ref", String(64), nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    # SQLite (revision 0019): the rows live in the primary key's b-tree, so a step record
    # writes one b-tree instead of a rowid table and a separate primary-key index.
    sqlite_with_rowid=False,
)

blobs = Table(
    "aevos_blobs",
    metadata,
    Column("ref", String(64), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

signals = Table(
    "aevos_signals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_aevos_signals_run_topic", signals.c.run_id, signals.c.topic, signals.c.id)

queues = Table(
    "aevos_queues",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("concurrency", Integer, nullable=True),
    Column("rate_limit", Integer, nullable=True),
    Column("rate_period", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
)

# -- governance (revision 0002) ------------------------------------------------------------

audit = Table(
    "aevos_audit",
    metadata,
    # One hash chain per tenant: seq is contiguous within a tenant.
    Column("tenant", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", Float, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("subject", String(300), nullable=True),
    Column("run_id", String(200), nullable=True),
    # The canonical JSON of the whole record; the hash covers exactly these bytes.
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_aevos_audit_run", audit.c.tenant, audit.c.run_id)
Index("ix_aevos_audit_action", audit.c.tenant, audit.c.action, audit.c.at)

audit_heads = Table(
    "aevos_audit_heads",
    metadata,
    # The last seq and hash of each chain: detects a truncated tail, and its row lock
    # serialises appends to one chain across processes.
    Column("tenant", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
)

tokens = Table(
    "aevos_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    # sha256 of the secret part; the secret itself is shown once, at creation.
    Column("secret_hash", String(64), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
)
Index("ix_aevos_tokens_tenant", tokens.c.tenant)

pii_vault = Table(
    "aevos_pii_vault",
    metadata,
    # Reversible tokenisation: token -> the original value, encrypted with the vault key.
    Column("tenant", String(64), primary_key=True),
    Column("token", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
)

# -- model layer (revision 0003) -----------------------------------------------------------

models = Table(
    "aevos_models",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("description", Text, nullable=True),
    Column("owner", String(200), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

model_versions = Table(
    "aevos_model_versions",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    # sha256 of the artifact bytes; the bytes live in aevos_blobs under this digest.
    Column("digest", String(64), nullable=False),
    Column("flavor", String(50), nullable=False),
    Column("config", Text, nullable=False),  # JSON: adapter settings, never secrets
    Column("card", Text, nullable=False),  # JSON model card
    Column("signature", Text, nullable=True),  # JSON: the input it accepts
    Column("tags", Text, nullable=False),  # JSON object
    Column("created_by", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)

model_aliases = Table(
    "aevos_model_aliases",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("alias", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    # Where the alias pointed before its last move: rolling back is moving it back.
    Column("previous_version", Integer, nullable=True),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", Float, nullable=False),
)

budgets = Table(
    "aevos_budgets",
    metadata,
    # One row per scope ("tenant:acme", "workflow:triage", "model:acme/intent") and window.
    Column("scope", String(300), primary_key=True),
    Column("window_start", Float, primary_key=True),
    Column("window_seconds", Float, nullable=False),
    Column("cost_limit", Float, nullable=True),
    Column("calls_limit", Integer, nullable=True),
    Column("tokens_limit", Integer, nullable=True),
    # Reserved before a call, settled to the actual amount after it.
    Column("cost_used", Float, nullable=False),
    Column("calls_used", Integer, nullable=False),
    Column("tokens_used", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# -- people in the loop (revision 0004) ----------------------------------------------------

tasks = Table(
    "aevos_tasks",
    metadata,
    # "<run_id>.<seq>": the position in the run that asked, so a replay finds its task.
    Column("task_id", String(220), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("run_id", String(200), nullable=False),
    Column("workflow", String(200), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("title", String(500), nullable=False),
    Column("queue", String(100), nullable=False),  # the inbox it waits in
    Column("role", String(32), nullable=False),  # who may work it
    Column("status", String(16), nullable=False),  # OPEN CLAIMED SUBMITTED CANCELLED EXPIRED
    Column("priority", Integer, nullable=False),
    Column("form", Text, nullable=False),  # JSON: the fields to fill
    Column("case_data", Text, nullable=True),  # JSON: what the reviewer looks at
    Column("suggestion", Text, nullable=True),  # JSON: the model's pre-filled values
    Column("confidence", Float, nullable=True),
    Column("model", String(200), nullable=True),
    Column("model_version", String(220), nullable=True),  # "name@3"
    Column("input_digest", String(80), nullable=True),
    Column("call_id", String(64), nullable=True),  # the model call that suggested
    Column("assignee", String(300), nullable=True),
    Column("claimed_at", Float, nullable=True),
    Column("sla_seconds", Float, nullable=True),
    Column("due_at", Float, nullable=True),
    Column("escalate_to", String(100), nullable=True),
    Column("escalated_at", Float, nullable=True),
    # Revision 0006: an escalation chain. The queues each escalation moves the task to, in
    # order (JSON; null: escalate_to alone, or its own queue), how many escalations the
    # task has (0 without an SLA) and how many it has had.
    Column("escalation_chain", Text, nullable=True),
    Column("escalations", Integer, nullable=False, server_default="0"),
    Column("escalation_level", Integer, nullable=False, server_default="0"),
    Column("result", Text, nullable=True),  # JSON: the submitted values
    Column("submitted_by", String(300), nullable=True),
    Column("submitted_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index(
    "ix_aevos_tasks_inbox",
    tasks.c.tenant,
    tasks.c.status,
    tasks.c.queue,
    tasks.c.priority,
    tasks.c.created_at,
)
Index("ix_aevos_tasks_run", tasks.c.run_id)
Index("ix_aevos_tasks_due", tasks.c.status, tasks.c.due_at)

feedback = Table(
    "aevos_feedback",
    metadata,
    # A human decision on a model's suggestion: the labelled data the evolution loop learns
    # from, with lineage to the run, the step and the model version.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("task_id", String(220), nullable=False, unique=True),
    Column("run_id", String(200), nullable=False),
    Column("workflow", String(200), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("model", String(200), nullable=True),
    Column("model_version", String(220), nullable=True),
    Column("input_digest", String(80), nullable=True),
    Column("call_id", String(64), nullable=True),
    Column("suggestion", Text, nullable=True),  # JSON
    Column("confidence", Float, nullable=True),
    Column("decision", Text, nullable=False),  # JSON
    Column("overridden", Integer, nullable=False),  # 0/1: any suggested value changed
    Column("reviewer", String(300), nullable=False),
    Column("asked_at", Float, nullable=False),
    Column("decided_at", Float, nullable=False),
)
Index("ix_aevos_feedback_tenant", feedback.c.tenant, feedback.c.decided_at)
Index("ix_aevos_feedback_model", feedback.c.tenant, feedback.c.model, feedback.c.decided_at)

events = Table(
    "aevos_events",
    metadata,
    # Every event received by webhook, accepted or not: a rejected event keeps its reason.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("source", String(100), nullable=False),
    Column("event_id", String(200), nullable=True),  # the sender's id: dedupes redeliveries
    Column("status", String(16), nullable=False),  # ACCEPTED DUPLICATE REJECTED
    Column("reason", Text, nullable=True),
    Column("run_id", String(200), nullable=True),
    Column("payload_digest", String(80), nullable=True),
    Column("size", Integer, nullable=False),
    Column("received_at", Float, nullable=False),
    # webhook, nats or signal (revision 0016)
    Column("channel", String(16), nullable=False, server_default="webhook"),
)
Index("ix_aevos_events_source", events.c.tenant, events.c.source, events.c.received_at)

# -- dead letters (revision 0016) ----------------------------------------------------------

dead_letters = Table(
    "aevos_dead_letters",
    metadata,
    # An authenticated event that failed validation or mapping, kept with its body so that
    # it can be replayed once the cause is fixed; one row per event however often redelivered.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("channel", String(16), nullable=False),  # webhook | nats
    Column("source", String(100), nullable=False),  # the webhook source or NATS trigger
    Column("event_id", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # DEAD | REPLAYED
    Column("code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("payload_digest", String(80), nullable=False),
    Column("size", Integer, nullable=False),
    Column("meta", Text, nullable=False),  # JSON: subject, stream, sequence
    Column("attempts", Integer, nullable=False),  # replays tried
    Column("run_id", String(200), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("tenant", "channel", "source", "event_id", name="uq_aevos_dead_letters_event"),
)
Index(
    "ix_aevos_dead_letters_status",
    dead_letters.c.tenant,
    dead_letters.c.status,
    dead_letters.c.created_at,
)

# -- approvals (revision 0005) -------------------------------------------------------------

approvals = Table(
    "aevos_approvals",
    metadata,
    # A gated action waiting for a second person (four eyes): today a promotion that the
    # promotion policy answered with "approve". Decided once, by a conditional UPDATE.
    Column("approval_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("kind", String(32), nullable=False),  # "promotion"
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("alias", String(100), nullable=False),
    Column("alias_was", Integer, nullable=True),  # where the alias pointed when asked
    Column("policy", String(200), nullable=False),
    Column("evidence", Text, nullable=False),  # JSON: what the policy judged
    Column("decision", Text, nullable=False),  # JSON: the policy's decision record
    Column("status", String(16), nullable=False),  # PENDING APPROVED REJECTED EXPIRED SUPERSEDED
    Column("requested_by", String(300), nullable=False),  # the requester's actor
    Column("requester_token", String(32), nullable=False),
    Column("requester_name", String(200), nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("decided_by", String(300), nullable=True),
    Column("decided_at", Float, nullable=True),
    Column("reason", Text, nullable=True),
)
Index("ix_aevos_approvals_tenant", approvals.c.tenant, approvals.c.status, approvals.c.requested_at)
Index("ix_aevos_approvals_due", approvals.c.status, approvals.c.expires_at)

# -- kept cases (revision 0007) ------------------------------------------------------------

cases = Table(
    "aevos_cases",
    metadata,
    # What a model (or a person) saw, kept to learn from and replay: the input after the
    # data policy, encrypted with the tenant's case key (aevos.cases). case_id is the model
    # call's call_id, or "task:<task_id>" for a human task.
    Column("tenant", String(64), primary_key=True),
    Column("case_id", String(230), primary_key=True),
    Column("kind", String(16), nullable=False),  # model_call | task
    Column("model", String(200), nullable=True),
    Column("version", Integer, nullable=True),
    Column("run_id", String(200), nullable=True),
    Column("seq", Integer, nullable=True),
    Column("call_id", String(64), nullable=True),
    Column("task_id", String(220), nullable=True),
    Column("input_digest", String(80), nullable=False),  # sha256 of the kept input
    Column("model_input_digest", String(80), nullable=True),  # what the model was given
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),  # null: kept until deleted
)
Index("ix_aevos_cases_model", cases.c.tenant, cases.c.model, cases.c.created_at)
Index("ix_aevos_cases_run", cases.c.tenant, cases.c.run_id)
Index("ix_aevos_cases_expiry", cases.c.expires_at)

case_subjects = Table(
    "aevos_case_subjects",
    metadata,
    # The data subjects (vault tokens) a kept case mentions: forgetting a subject is an
    # indexed lookup here, never a scan of encrypted inputs.
    Column("tenant", String(64), primary_key=True),
    Column("token", String(64), primary_key=True),
    Column("case_id", String(230), primary_key=True),
)
Index("ix_aevos_case_subjects_case", case_subjects.c.tenant, case_subjects.c.case_id)

# -- labels and datasets (revision 0008) ---------------------------------------------------

# A task's purpose: "review" (a run waits for the answer) or "qa" (a random sample of
# automated decisions, asked without holding the run). ``unbiased``: the case was put to a
# person independently of the model's confidence (0/1). ``label_field``: the form field the
# prediction's suggestion filled, whose submitted value becomes the case's label.
tasks.append_column(Column("purpose", String(16), nullable=False, server_default="review"))
tasks.append_column(Column("unbiased", Integer, nullable=False, server_default="0"))
tasks.append_column(Column("label_field", String(100), nullable=True))
# JSON: the model's top suggestions per choice field, {field: [{"value", "probability"}]}; in
# a column of its own rather than inside the form, which older processes read as a list.
tasks.append_column(Column("ranked", Text, nullable=True))
feedback.append_column(Column("purpose", String(16), nullable=False, server_default="review"))
feedback.append_column(Column("unbiased", Integer, nullable=False, server_default="0"))

labels = Table(
    "aevos_labels",
    metadata,
    # What the right answer for a case was, by whom and when. Never updated or deleted: a
    # later label that disagrees is another row, and the disagreement an aevos_label_conflicts
    # row. The case's label is its highest-ranked source's latest (records/label.py).
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("case_id", String(230), nullable=False),  # call_id, or "task:<task_id>"
    Column("model", String(200), nullable=True),
    Column("model_version", String(220), nullable=True),
    Column("label", Text, nullable=False),  # JSON scalar
    Column("source", String(16), nullable=False),  # review qa ground_truth
    Column("unbiased", Integer, nullable=False),  # 0/1
    Column("run_id", String(200), nullable=True),
    Column("task_id", String(220), nullable=True),
    Column("feedback_id", Integer, nullable=True),
    Column("actor", String(300), nullable=False),
    Column("labelled_at", Float, nullable=False),
)
Index("ix_aevos_labels_case", labels.c.tenant, labels.c.case_id)
Index("ix_aevos_labels_model", labels.c.tenant, labels.c.model, labels.c.labelled_at)

label_conflicts = Table(
    "aevos_label_conflicts",
    metadata,
    # Two labels of one case that disagree: the one that arrived, the earlier one it
    # contradicts, and which of them the case has since (the winner).
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("case_id", String(230), nullable=False),
    Column("model", String(200), nullable=True),
    Column("label_id", Integer, nullable=False),
    Column("other_id", Integer, nullable=False),
    Column("winner_id", Integer, nullable=False),
    Column("recorded_at", Float, nullable=False),
)
Index("ix_aevos_label_conflicts_tenant", label_conflicts.c.tenant, label_conflicts.c.recorded_at)

datasets = Table(
    "aevos_datasets",
    metadata,
    # An immutable dataset version of a model: content-addressed by the SHA-256 of its
    # canonical rows, so the same rows are stored once.
    Column("tenant", String(64), primary_key=True),
    Column("digest", String(64), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("runs", Integer, nullable=False),
    Column("people", Integer, nullable=False),
    Column("unbiased", Integer, nullable=False),
    Column("sources", Text, nullable=False),  # JSON: rows per label source
    Column("until", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(300), nullable=False),
)
Index("ix_aevos_datasets_model", datasets.c.tenant, datasets.c.model, datasets.c.created_at)

dataset_rows = Table(
    "aevos_dataset_rows",
    metadata,
    # A version's rows, in canonical order (position), each the case's label when it was
    # taken and its lineage (the run and the person).
    Column("tenant", String(64), primary_key=True),
    Column("digest", String(64), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("case_id", String(230), nullable=False),
    Column("label", Text, nullable=False),  # JSON scalar
    Column("source", String(16), nullable=False),
    Column("unbiased", Integer, nullable=False),
    Column("run_id", String(200), nullable=True),
    Column("actor", String(300), nullable=False),
    Column("labelled_at", Float, nullable=False),
)

# -- certifications (revision 0009) --------------------------------------------------------

certifications = Table(
    "aevos_certifications",
    metadata,
    # A model version's certified automation threshold (Learn-then-Test), appended, never
    # updated: the latest row of a version is the one in force; the older ones are its
    # history. The figures only, never the cases: the dataset version is named by digest.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("target", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("method", String(32), nullable=False),
    Column("n", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("threshold", Float, nullable=True),  # NULL: nothing certified, nothing automated
    Column("p_value", Float, nullable=True),
    Column("dataset", String(100), nullable=True),  # the dataset version's digest
    Column("evidence", Text, nullable=False),  # JSON: n_above, min_count, start, reason
    Column("created_by", String(300), nullable=False),
    Column("created_at", Float, nullable=False),
)
Index(
    "ix_aevos_certifications_version",
    certifications.c.tenant,
    certifications.c.model,
    certifications.c.version,
    certifications.c.id,
)

# -- retraining (revision 0010) ------------------------------------------------------------

retraining_configs = Table(
    "aevos_retraining_configs",
    metadata,
    # How a model is retrained: every change is a new version (the highest is in force), so
    # each retraining names the exact recipe, parameters and triggers it ran with.
    Column("tenant", String(64), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("recipe", String(64), nullable=False),
    Column("params", Text, nullable=False),  # JSON: the recipe's parameters
    Column("every_labels", Integer, nullable=True),  # NULL: no label-count trigger
    Column("interval", Float, nullable=True),  # seconds; NULL: no schedule
    Column("settings", Text, nullable=False),  # JSON: holdout, certification, promotion
    Column("updated_by", String(300), nullable=False),
    Column("updated_at", Float, nullable=False),
)

retraining_runs = Table(
    "aevos_retraining_runs",
    metadata,
    # One retraining: the workflow run of the same id, and what it came to.
    Column("run_id", String(200), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("trigger", String(16), nullable=False),  # manual | labels | schedule | drift
    Column("status", String(16), nullable=False),  # queued | running | succeeded | failed
    Column("config_version", Integer, nullable=False),
    Column("requested_by", String(300), nullable=False),
    Column("label_count", Integer, nullable=False),  # the model's labels when started
    Column("reason", Text, nullable=True),  # why it failed
    Column("dataset", String(100), nullable=True),  # the dataset version's digest
    Column("parent", Integer, nullable=True),  # the champion when it started
    Column("candidate", Integer, nullable=True),  # the version it registered
    Column("certified", Boolean, nullable=True),
    Column("threshold", Float, nullable=True),
    Column("promotion", String(16), nullable=True),  # the policy's decision
    Column("lineage", Text, nullable=False),  # JSON: recipe, params, metrics, certification
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
)
Index(
    "ix_aevos_retraining_runs_model",
    retraining_runs.c.tenant,
    retraining_runs.c.model,
    retraining_runs.c.started_at,
)

# -- replays (revision 0012) ---------------------------------------------------------------

replays = Table(
    "aevos_replays",
    metadata,
    # One replay of a candidate over kept cases: the workflow run of the same id, what it
    # was asked and what it came to.
    Column("replay_id", String(200), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),  # the candidate
    Column("champion", Integer, nullable=True),  # the champion when it was planned
    Column(
        "status", String(16), nullable=False
    ),  # running | passed | failed | inconclusive | error
    Column("passed", Boolean, nullable=True),
    Column("reason", Text, nullable=True),
    Column("criteria", Text, nullable=False),  # JSON: ReplayCriteria
    Column("figures", Text, nullable=False),  # JSON: what it measured ({} while running)
    Column("since", Float, nullable=True),  # the window's start; NULL: every kept case
    Column("case_limit", Integer, nullable=False),
    Column("rate", Float, nullable=False),  # cases per second at most
    Column("requested_by", String(300), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
)
Index(
    "ix_aevos_replays_version",
    replays.c.tenant,
    replays.c.model,
    replays.c.version,
    replays.c.started_at,
)
# -- rollouts (revision 0011) ----------------------------------------------------------------

rollouts = Table(
    "aevos_rollouts",
    metadata,
    # A candidate version exposed step by step; the gateway routes by the active one.
    Column("rollout_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),  # the candidate
    Column("champion", Integer, nullable=True),  # the champion when it started
    Column("steps", Text, nullable=False),  # JSON: [0, 5, 25, 50, 100]
    Column("step", Integer, nullable=False),  # index into steps
    Column("state", String(16), nullable=False),
    Column("criteria", Text, nullable=False),  # JSON: the analysis thresholds
    Column("step_seconds", Float, nullable=False),
    Column("step_started_at", Float, nullable=False),
    Column("deadline", Float, nullable=True),  # NULL while paused
    Column("replay", Boolean, nullable=False),
    Column("policy", String(100), nullable=False),
    Column("created_by", String(300), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("last_verdict", Text, nullable=True),  # JSON: the Verdict that moved it last
    # Bumped by every transition, each of which is conditional on it: one actor wins a race.
    Column("revision", Integer, nullable=False),
    # The model while the rollout is active, NULL once it ended: unique per tenant, so a
    # model never has two active rollouts (NULLs never collide, on either backend).
    Column("active_model", String(200), nullable=True),
    UniqueConstraint("tenant", "active_model", name="uq_aevos_rollouts_active"),
)
Index("ix_aevos_rollouts_model", rollouts.c.tenant, rollouts.c.model, rollouts.c.created_at)
# -- monitors (revision 0013) --------------------------------------------------------------

monitor_configs = Table(
    "aevos_monitor_configs",
    metadata,
    # How a model is monitored: every change is a new version (the highest is in force).
    Column("tenant", String(64), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("settings", Text, nullable=False),  # JSON: window, reference, thresholds, on_alert
    Column("check_interval", Float, nullable=False),  # seconds between the workers' checks
    Column("updated_by", String(300), nullable=False),
    Column("updated_at", Float, nullable=False),
    # When a worker last checked the model (the version in force carries it): workers claim
    # a check by moving it, so many workers check each model once per interval.
    Column("checked_at", Float, nullable=True),
)

monitor_results = Table(
    "aevos_monitor_results",
    metadata,
    # One monitor's figure at one check: never updated.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=True),  # the model version monitored
    Column("monitor", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # ok | alert | no_data
    Column("value", Float, nullable=True),
    Column("threshold", Float, nullable=True),
    Column("p_value", Float, nullable=True),
    Column("alert", Boolean, nullable=False),
    Column("n", Integer, nullable=False),
    Column("since", Float, nullable=True),
    Column("until", Float, nullable=True),
    Column("figures", Text, nullable=False),  # JSON
    Column("at", Float, nullable=False),
)
Index(
    "ix_aevos_monitor_results_model",
    monitor_results.c.tenant,
    monitor_results.c.model,
    monitor_results.c.at,
)

monitor_alerts = Table(
    "aevos_monitor_alerts",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=True),
    Column("monitor", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # open | acknowledged | resolved
    # "<tenant>/<model>/<monitor>" while open, NULL once closed: one open alert per model
    # and monitor, enforced by the database however many workers check at once.
    Column("open_key", String(320), nullable=True, unique=True),
    Column("figures", Text, nullable=False),  # JSON: the figures that raised it
    Column("since", Float, nullable=True),
    Column("until", Float, nullable=True),
    Column("actions", Text, nullable=False),  # JSON: what on_alert did (retraining, task)
    Column("opened_at", Float, nullable=False),
    Column("closed_at", Float, nullable=True),
    Column("closed_by", String(300), nullable=True),
    Column("reason", Text, nullable=True),  # why it was closed
)
Index(
    "ix_aevos_monitor_alerts_model",
    monitor_alerts.c.tenant,
    monitor_alerts.c.model,
    monitor_alerts.c.opened_at,
)

outbox = Table(
    "aevos_outbox",
    metadata,
    # One message a run published (revision 0017): written in the transaction of the
    # position or step that published it, sent by the relay after that commit.
    Column("id", Integer, primary_key=True, autoincrement=True),
    # "<run id>/<seq>[/<n>]": the same on every replay; the JetStream Nats-Msg-Id and the
    # webhook's X-Aevos-Event-Id, so a resend after a relay crash is deduplicated downstream.
    Column("message_id", String(300), nullable=False, unique=True),
    Column("tenant", String(64), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("payload", Text, nullable=False),  # JSON
    Column("run_id", String(200), nullable=True),
    Column("status", String(16), nullable=False),  # PENDING SENT DEAD
    Column("attempts", Integer, nullable=False),
    # When the relay may next take it: due now, after a retry's backoff, or after the
    # visibility lease of a relay that took it and may have died.
    Column("due_at", Float, nullable=False),
    Column("destination", String(300), nullable=True),  # where it went (or was last tried)
    Column("last_error", Text, nullable=True),  # why the last attempt failed, or why DEAD
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float, nullable=True),
)
Index("ix_aevos_outbox_due", outbox.c.status, outbox.c.due_at)
# -- schedules (revision 0018) -------------------------------------------------------------

schedules = Table(
    "aevos_schedules",
    metadata,
    # A schedule declared in code (app.schedule): its definition as last declared, and its
    # state, which outlives every process.
    Column("name", String(100), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("workflow", String(200), nullable=False),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("catch_up", Integer, nullable=False),
    Column("queue", String(100), nullable=True),
    Column("paused", Boolean, nullable=False),
    # Ticks after this instant are due. Workers claim a tick by moving it (compare and set,
    # in the transaction that inserts the tick's run), so each tick starts one run.
    Column("last_tick", Float, nullable=False),
    Column("next_tick", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(300), nullable=False),
)

schedule_ticks = Table(
    "aevos_schedule_ticks",
    metadata,
    # What each tick did: started (its run, its lateness), skipped (a range of missed ticks
    # past the catch-up limit, counted), triggered (by hand). Never updated.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("schedule", String(100), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("tick_at", Float, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("count", Integer, nullable=False),
    Column("run_id", String(200), nullable=True),
    Column("lateness", Float, nullable=True),
    Column("actor", String(300), nullable=False),
    Column("at", Float, nullable=False),
)
Index("ix_aevos_schedule_ticks_schedule", schedule_ticks.c.schedule, schedule_ticks.c.tick_at)

# -- run traces (revision 0014) ------------------------------------------------------------

run_traces = Table(
    "aevos_run_traces",
    metadata,
    # The W3C trace context of a run's start span, written with the run when tracing is on,
    # so that every execution of the run (on any worker) continues the same trace. Its own
    # table: a run started without tracing costs nothing here.
    Column("run_id", String(200), primary_key=True),
    Column("traceparent", String(55), nullable=False),
    Column("tracestate", String(512), nullable=True),
    Column("created_at", Float, nullable=False),
)

# -- liveness (revision 0015) ------------------------------------------------------------------

# The processes that execute runs and hold a liveness lock while they live (see
# aevos.storage.liveness): another worker that can take an owner's lock knows it is dead and
# hands its runs back to the queues at once, instead of waiting for their leases to lapse.
workers = Table(
    "aevos_workers",
    metadata,
    Column("owner", String(100), primary_key=True),  # as in aevos_runs.owner
    # The advisory lock key (PostgreSQL) or the lock file's name (SQLite) it holds.
    Column("lock_key", BigInteger, nullable=False),
    Column("registered_at", Float, nullable=False),
)
