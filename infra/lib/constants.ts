/**
 * Numbers the edge stack is built from. They mirror deploy/edge.yaml (the
 * configuration baked into the image); test/stack.test.ts checks both agree.
 */

/**
 * Public port of the NLB for each listener role of deploy/edge.yaml. The
 * container ports come from the file itself (infra/lib/edge-config.ts): the
 * container runs as a non-root user and listens above 1024.
 */
export type ListenerRole = 'mx' | 'submission' | 'smtps';
export const PUBLIC_PORT_BY_ROLE: Record<ListenerRole, number> = { mx: 25, submission: 587, smtps: 465 };

/** The NLB's health check path on the operations endpoint (http.listen in the file). /readyz answers 503 while draining or shedding load, so the NLB stops sending new flows. */
export const HEALTH_PATH = '/readyz';

/** delivery.deadline in deploy/edge.yaml (the schema default): budget for all targets of a message. */
export const DELIVERY_DEADLINE_SECONDS = 30;
/** shutdown.grace in deploy/edge.yaml: how long in-flight transactions may finish after SIGTERM. */
export const SHUTDOWN_GRACE_SECONDS = 30;
/** Room for closing listeners and pools after the grace period, and for clock/scheduling slack. */
export const DRAIN_MARGIN_SECONDS = 15;

/**
 * ECS sends SIGTERM, waits stopTimeout, then SIGKILL. ECS caps stopTimeout at
 * 120 s on Fargate (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html,
 * "stopTimeout"). It must outlast the drain, or the second signal cuts it short.
 */
export const STOP_TIMEOUT_SECONDS = Math.max(DELIVERY_DEADLINE_SECONDS, SHUTDOWN_GRACE_SECONDS) + DRAIN_MARGIN_SECONDS;
export const MAX_STOP_TIMEOUT_SECONDS = 120;

/**
 * NLB deregistration delay: a flow already open when the task leaves the target
 * group keeps going this long, enough for a transaction in DATA to reach its
 * reply (deadline + margin). ECS waits for deregistration before it stops the
 * task (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/load-balancer-connection-draining.html).
 */
export const DEREGISTRATION_DELAY_SECONDS = DELIVERY_DEADLINE_SECONDS + DRAIN_MARGIN_SECONDS;

/**
 * A task whose /readyz fails (draining, or shedding load when its memory
 * budget is used up) gets no new flows, but the NLB would by default reset
 * every flow it has, transactions in DATA included. With connection
 * termination off, open flows stay this long in "unhealthy.draining": as
 * long as a deregistered task's, so a transaction reaches its reply either way.
 */
export const UNHEALTHY_DRAINING_SECONDS = DEREGISTRATION_DELAY_SECONDS;

/** smtp.maxClients default: concurrent connections one task accepts. */
export const MAX_CLIENTS_PER_TASK = 1000;
/** Scale out before a task reaches its connection ceiling. */
export const TARGET_CONNECTIONS_PER_TASK = Math.round(MAX_CLIENTS_PER_TASK * 0.6);
export const TARGET_CPU_PERCENT = 60;

/** Task size (Fargate valid combination: 0.5 vCPU with 1 GiB). */
export const TASK_CPU_UNITS = 512;
export const TASK_MEMORY_MIB = 1024;

/** Key prefix of claim-check blobs in the shared bucket (blobs.store.prefix in deploy/edge.yaml). */
export const BLOB_PREFIX = 'blobs/';

/** VPC address range; the PROXY header is trusted only from inside it (the NLB's nodes). */
export const VPC_CIDR = '10.40.0.0/16';

/** Seconds between the container's SMTP health checks; three failures in a row and ECS replaces the task. */
export const SMTP_PROBE_INTERVAL_SECONDS = 15;
