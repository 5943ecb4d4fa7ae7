/** Caspio's timestamp format: ISO 8601 UTC with seven fractional digits, `2023-05-17T12:27:53.9674307Z`. */
export const formatApiDate = (date: Date) => `${date.toISOString().slice(0, -1)}0000Z`;

/** The payload's `eventDate`: UTC without a zone suffix, `2026-01-16T19:52:55`. */
export const formatEventDate = (date: Date) => date.toISOString().slice(0, 19);
