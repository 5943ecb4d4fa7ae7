import { AppError } from '../errors';

export const PERMISSIONS = ['webhooks:read', 'webhooks:write'] as const;
export type Permission = (typeof PERMISSIONS)[number];
export const READ_ONLY_PERMISSIONS: Permission[] = ['webhooks:read'];

/** The authenticated API client behind a request. */
export interface Principal {
  clientId: string;
  name: string;
  email: string;
  permissions: readonly string[];
  /** When the access token the caller presented expires. */
  tokenExpiresAt?: Date;
}

/** How `CreatedBy` and `ModifiedBy` show a profile: `John Doe (john.doe@acme.com)`. */
export const displayName = (principal: Pick<Principal, 'name' | 'email'>) => `${principal.name} (${principal.email})`;

export const hasPermission = (principal: Principal, permission: Permission) => principal.permissions.includes(permission);

export function requirePermission(principal: Principal, permission: Permission): void {
  if (!hasPermission(principal, permission)) {
    throw new AppError('UnsufficientPrivileges', `This operation needs the '${permission}' permission`);
  }
}
