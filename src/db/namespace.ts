import { pgSchema } from 'drizzle-orm/pg-core';

/** The gateway's own tables live here, apart from the user's watched schema. */
export const GATEWAY_SCHEMA = 'webhook_gateway';
export const gatewaySchema = pgSchema(GATEWAY_SCHEMA);
