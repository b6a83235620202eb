"""PostgreSQL's hot path: what every step and every workflow does, straight on the driver.

A workflow's insert, a step's claim and completion, a workflow's finish and its
publication mark: each is one statement that commits by itself, run by `Driver` on
connections kept in autocommit (made like the engine's), prepared once per connection,
its rows handed back as named tuples. So a step pays for two round trips and little
else: building, compiling and caching these statements through SQLAlchemy cost the
worker as much CPU as PostgreSQL spent running them. Everything else goes through
SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

from .. import states as S

#: the per-step columns that `HotStatements.insert` reads from its JSON, with their types
NODE_COLUMNS = {
    "step_name": "text",
    "position": "int",
    "state": "text",
    "actor_name": "text",
    "message": "jsonb",
    "deps": "jsonb",
    "dependents": "jsonb",
    "pending_deps": "int",
    "allow_failed_deps": "boolean",
}
NODE_JSON_KEYS = tuple(NODE_COLUMNS)


def durable_only_if(condition: str) -> str:
    """The WHERE clause of a completion's last SELECT: its transaction waits for its WAL
    to reach the disk only if `condition` holds (SQL over the statement's CTEs).

    A completion that makes no step ready and leaves steps to run in its workflow need
    not wait. Lost to a crash of PostgreSQL, it leaves its step to run again, as a lost
    claim does. Nothing can have followed from it. Whatever does follow waits for the
    disk, and that flushes this completion first, because it is earlier in the WAL:
    - the completion that makes a dependent ready took the dependent's counter after it;
    - the one that settles the workflow's last step took the workflow's count after it;
    - a paid LLM call commits durably too.
    """
    return (
        "WHERE set_config('synchronous_commit', "
        f"CASE WHEN {condition} THEN 'on' ELSE 'off' END, true) IS NOT NULL"
    )


class HotStatements:
    """The hot path's statements as psycopg SQL, for one store's tables: the claim, the
    completion, the insert of a workflow, its finish and its publication mark."""

    def __init__(
        self, nodes: str, workflows: str, completions: str, change_cols: tuple[str, ...]
    ) -> None:
        self._workflows = workflows
        returned = ", ".join(change_cols)
        claimable = ", ".join(f"'{state}'" for state in S.CLAIMABLE)
        #: the claim, with its dependencies' results ({name: [state, result]})
        self.claim = f"""
            WITH claimed AS (
                UPDATE {nodes}
                   SET state = '{S.EXECUTING}',
                       attempt = CASE WHEN state = '{S.SNOOZED}' THEN attempt
                                      ELSE attempt + 1 END,
                       version = version + 1, claimed_by = %(worker)s,
                       heartbeat_at = %(now)s, started_at = %(now)s,
                       due_at = NULL, error = NULL
                 WHERE workflow_id = %(wid)s AND step_name = %(step)s
                   AND (state IN ({claimable})
                        OR (state = '{S.EXECUTING}' AND heartbeat_at < %(stale)s))
             RETURNING {returned}, deps, dependents, allow_failed_deps
            )
            SELECT claimed.*,
                   (SELECT jsonb_object_agg(
                               dep.name,
                               -- one primary-key lookup per dependency, whatever the
                               -- planner believes of the table: a step's workflow may
                               -- hold 50,000 rows, and a filter over them would run for
                               -- every claim
                               (SELECT jsonb_build_array(n.state, n.result)
                                  FROM {nodes} AS n
                                 WHERE n.workflow_id = %(wid)s AND n.step_name = dep.name))
                      FROM jsonb_array_elements_text(claimed.deps) AS dep(name)
                   ) AS dep_results
              FROM claimed
             -- The claim commits without waiting for its WAL to reach the disk. Losing
             -- it to a crash of PostgreSQL leaves the step claimable, as a worker's
             -- crash does, and the step runs again. Whatever follows from the step
             -- commits durably (see `durable_only_if`), which flushes the WAL up to the
             -- claim and so makes it durable first.
             WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL
        """
        self.state = (
            f"SELECT state FROM {nodes} WHERE workflow_id = %(wid)s AND step_name = %(step)s"
        )
        done = f"""
            WITH done AS (
                UPDATE {nodes}
                   SET state = '{S.COMPLETED}', has_result = true,
                       result = CAST(%(result)s AS jsonb), version = version + 1,
                       finished_at = %(now)s, error = NULL, claimed_by = NULL
                 WHERE workflow_id = %(wid)s AND step_name = %(step)s
                   -- `IS TRUE` keeps the state index out of the plan, here and below:
                   -- each row is one primary-key lookup, never a walk over every
                   -- executing (or pending) step's entry in the state index
                   AND (state = '{S.EXECUTING}') IS TRUE AND attempt = %(attempt)s
             RETURNING {returned}
            ), counted AS (
                UPDATE {workflows} AS w SET remaining = w.remaining - 1
                 WHERE w.id = %(wid)s AND EXISTS (SELECT FROM done)
             RETURNING w.remaining, w.cancelled, w.not_completed
            )"""

        made_ready = f"SELECT FROM ready WHERE ready.state = '{S.AVAILABLE}'"

        def completion(dependents: str) -> str:
            """The completion of a step whose dependents `dependents` picks out."""
            return f"""{done}, ready AS (
                UPDATE {nodes} AS d
                   SET pending_deps = d.pending_deps - 1,
                       state = CASE WHEN d.pending_deps = 1 THEN '{S.AVAILABLE}'
                                    ELSE d.state END,
                       due_at = CASE WHEN d.pending_deps = 1 THEN %(now)s ELSE d.due_at END
                 WHERE d.workflow_id = %(wid)s AND {dependents}
                   AND (d.state = '{S.PENDING}') IS TRUE AND EXISTS (SELECT FROM done)
             RETURNING d.state, d.message
            )
            SELECT done.*, counted.remaining, counted.cancelled, false AS finish_recorded,
                   (SELECT coalesce(jsonb_agg(ready.message), '[]'::jsonb)
                      FROM ready WHERE ready.state = '{S.AVAILABLE}') AS ready_messages
              FROM done, counted
             {durable_only_if(f"counted.remaining = 0 OR EXISTS ({made_ready})")}
        """

        #: the completion of a step with dependents: its result, its dependents'
        #: counters and the workflow's count of steps left
        self.complete = completion(
            """d.step_name = ANY(%(dependents)s)
                   -- bounds on the key's second column: without statistics the planner
                   -- leaves `= ANY` as a filter over all the workflow's steps, but
                   -- bounds always narrow the index scan (to one key for one dependent)
                   AND d.step_name BETWEEN (SELECT min(name) FROM unnest(%(dependents)s) AS name)
                                       AND (SELECT max(name) FROM unnest(%(dependents)s) AS name)"""
        )
        #: the same for a step with one dependent, as in a chain or a fan-out's middle:
        #: a plan with no array and no bounds to work out (5 % more steps a second
        #: through the store alone)
        self.complete_one = completion("d.step_name = %(dependent)s")
        #: the completion of a step without dependents, and the finish of its workflow
        #: when it was the last step and every step completed: the step that settles a
        #: workflow's last is always one without dependents, unless a step failed
        self.complete_sink = f"""{done}, finished AS (
                -- the counters come from the workflow's row as this statement updated
                -- it, so they are current, where a read of its steps would see only
                -- what had committed when this statement began
                INSERT INTO {completions} (workflow_id, outcome, failed_steps, finished_at)
                SELECT %(wid)s, '{S.COMPLETED}', '[]'::jsonb, %(now)s FROM counted
                 WHERE counted.remaining = 0 AND NOT counted.cancelled
                   AND counted.not_completed = 0
                ON CONFLICT DO NOTHING
             RETURNING outcome
            )
            SELECT done.*, counted.remaining, counted.cancelled,
                   EXISTS (SELECT FROM finished) AS finish_recorded,
                   '[]'::jsonb AS ready_messages
              FROM done, counted
             {durable_only_if("counted.remaining = 0")}
        """
        #: the finish of a workflow whose last step just settled and that did not
        #: complete every step (`complete` records the others), recorded exactly once
        self.finish = f"""
            WITH verdict AS (
                SELECT coalesce(jsonb_agg(step_name ORDER BY position)
                                    FILTER (WHERE state = '{S.DISCARDED}'),
                                '[]'::jsonb) AS failed_steps,
                       CASE WHEN %(cancelled)s THEN '{S.CANCELLED}'
                            -- a sink that did not complete
                            WHEN bool_or(dependents = '[]'::jsonb) THEN 'failed'
                            ELSE '{S.COMPLETED}' END AS outcome
                  FROM {nodes}
                 WHERE workflow_id = %(wid)s AND state <> '{S.COMPLETED}'
            )
            INSERT INTO {completions} (workflow_id, outcome, failed_steps, finished_at)
            SELECT %(wid)s, outcome, failed_steps, %(now)s FROM verdict
            ON CONFLICT DO NOTHING
            RETURNING outcome, failed_steps
        """
        columns = ", ".join(NODE_COLUMNS)
        typed = ", ".join(f"{name} {kind}" for name, kind in NODE_COLUMNS.items())
        #: every step of a new workflow, in the statement that inserts the workflow
        self._insert_nodes = f"""
            INSERT INTO {nodes} (workflow_id, workflow_name, inserted_at, due_at, {columns})
            SELECT %(id)s, %(name)s, %(p_now)s,
                   CASE WHEN r.state = '{S.AVAILABLE}' THEN %(p_now)s END, {columns}
              FROM jsonb_to_recordset(%(p_nodes)s) AS r({typed})
        """
        self.mark_published = (
            f"UPDATE {completions} SET published_at = %(now)s WHERE workflow_id = ANY(%(wids)s)"
        )

    def insert(self, workflow: dict[str, Any]) -> str:
        """A new workflow (`workflow`'s columns) and its steps, in one statement."""
        columns = ", ".join(workflow)
        values = ", ".join(f"%({name})s" for name in workflow)
        return (
            f"WITH workflow AS (INSERT INTO {self._workflows} ({columns}) VALUES ({values}))"
            + self._insert_nodes
        )
