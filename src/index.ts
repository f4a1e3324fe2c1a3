/**
 * postgate as a library: build a gateway from a validated config, parse
 * messages into postgate.email.v1 events, and the types receivers program
 * against. The `postgate` command (src/cli) is the usual way to run it.
 */
export { buildGateway, type Gateway, type GatewayDeps, type BoundAddress } from './gateway.js';
export { loadConfig, validateConfig, ConfigError, type ResolvedConfig, type LoadOptions } from './config/load.js';
export type { Config, ConfigInput } from './config/schema.js';
export { parseMessage, DEFAULT_PARSE_LIMITS, type ParseLimits, type BlobSink } from './message/parse.js';
export { inboundEmailSchema, emailEventSchema, emailJsonSchema, type InboundEmail, type EmailEvent, type Envelope, type Address, type Group, type Attachment } from './message/schema.js';
export { verifyMessage, type AuthResults } from './message/mailauth.js';
export { GatewayError, ERROR_CODES, type ErrorCode } from './core/errors.js';
export { deliverToTargets, type Target, type DeliveryMessage, type SkipStore, type ClaimCheck } from './delivery/index.js';
export { interpretReceiverAnswer } from './delivery/reply.js';
export { POINTER_EVENT_TYPE } from './delivery/claim-check.js';
export { signatureHeader, publicKeyText, parseSigningKey } from './delivery/signing.js';
export { buildDsn, type DsnInput } from './dsn/report.js';
