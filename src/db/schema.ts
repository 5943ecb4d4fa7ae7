// Every table of the gateway, for drizzle-kit and the typed database handle.
export { gatewaySchema } from './namespace';
export { installation } from './installation';
export * from '../auth/tables';
export * from '../webhooks/tables';
export * from '../events/tables';
export * from '../capture/tables';
export * from '../messages/tables';
export * from '../delivery/tables';
