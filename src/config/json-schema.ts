/**
 * The JSON Schema of the configuration (`postgate schema`, and
 * schema/config.json for editors), derived from the zod schema so the two
 * cannot drift apart.
 */
import { z } from 'zod';
import { configSchema } from './schema.js';

export function configJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }),
    $id: 'https://postgate.dev/schema/config.json',
    title: 'postgate configuration',
  };
}
