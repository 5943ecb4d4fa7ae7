import {
  getNamedType,
  getNullableType,
  GraphQLError,
  isCompositeType,
  isInterfaceType,
  isListType,
  isObjectType,
  Kind,
  parse,
  type ASTVisitor,
  type FragmentDefinitionNode,
  type GraphQLCompositeType,
  type GraphQLField,
  type GraphQLSchema,
  type SelectionSetNode,
  type ValidationContext,
  type ValueNode,
  type VariableDefinitionNode,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from '../messages/service';

export interface QueryLimits {
  /** Deepest field nesting (GraphiQL's own introspection query reaches 13). */
  maxDepth: number;
  /** Fields selected in one operation, counted after fragments are expanded. */
  maxFields: number;
  maxAliases: number;
  /** Lexical tokens in a document; bounds parsing work before anything else runs. */
  maxTokens: number;
  /** Estimated work: each field counts once per item of every list above it (see measure). */
  maxCost: number;
}

// A full page of messages, messages(first: 100) { edges { node { 8 fields attempts { all 8 fields } } } },
// costs 9,002 (messages + edges + 100 × (node + 8 fields + attempts + 10 × 8)), so two such pages fit in one
// operation while 30 aliased ones (270,060) do not.
export const DEFAULT_QUERY_LIMITS: QueryLimits = {
  maxDepth: 15,
  maxFields: 1000,
  maxAliases: 30,
  maxTokens: 5000,
  maxCost: 25_000,
};

/** Assumed length of a list of objects that no `first` bounds, e.g. outgoingWebhooks or a message's attempts. */
const DEFAULT_LIST_SIZE = 10;

/** What a selection set selects, counted from the selection set itself. */
interface Measure {
  /** Levels of fields in it: 1 for fields without selections of their own. */
  depth: number;
  fields: number;
  aliases: number;
  /** The cost of running it once; running it n times costs n times this. */
  cost: number;
}

interface Operation {
  schema: GraphQLSchema;
  fragments: Map<string, FragmentDefinitionNode>;
  variables: Map<string, VariableDefinitionNode>;
  /** Fragments being expanded on the current path. */
  expanding: Set<string>;
  /**
   * Each fragment measured once per page size it is spread under: expanding it afresh at every
   * spread costs time exponential in the document (fragments that spread the next one twice).
   */
  measuredFragments: Map<string, Measure>;
}

interface Position {
  /** The type whose fields the selection set picks; undefined below introspection and unknown fields. */
  type: GraphQLCompositeType | undefined;
  /** The page size from a `first` on the path that no list has taken yet. */
  pageSize: number | undefined;
}

const thousands = (n: number) => n.toLocaleString('en-US');

const clampPageSize = (size: number) => Math.min(Math.max(size, 1), MAX_PAGE_SIZE);

/** The page size `first` asks for, before variables are known: a variable counts as its default or the largest page. */
function pageSizeOf(value: ValueNode | undefined, variables: Map<string, VariableDefinitionNode>): number {
  if (!value || value.kind === Kind.NULL) return DEFAULT_PAGE_SIZE;
  if (value.kind === Kind.INT) return clampPageSize(Number(value.value));
  if (value.kind === Kind.VARIABLE) {
    const defaultValue = variables.get(value.name.value)?.defaultValue;
    if (defaultValue?.kind === Kind.INT) return clampPageSize(Number(defaultValue.value));
  }
  return MAX_PAGE_SIZE;
}

function fieldDefinition(type: GraphQLCompositeType | undefined, name: string): GraphQLField<unknown, unknown> | undefined {
  if (name.startsWith('__') || !(isObjectType(type) || isInterfaceType(type))) return undefined;
  return type.getFields()[name];
}

function typeCondition(schema: GraphQLSchema, name: string): GraphQLCompositeType | undefined {
  const type = schema.getType(name);
  return isCompositeType(type) ? type : undefined;
}

function add(total: Measure, part: Measure, { depthAbove = 0, repeats = 1 } = {}): void {
  total.depth = Math.max(total.depth, depthAbove + part.depth);
  total.fields += part.fields;
  total.aliases += part.aliases;
  if (repeats > 0) total.cost += repeats * part.cost; // 0 × Infinity would be NaN
}

function measure(selectionSet: SelectionSetNode, at: Position, operation: Operation): Measure {
  const total: Measure = { depth: 0, fields: 0, aliases: 0, cost: 0 };
  for (const selection of selectionSet.selections) {
    if (selection.kind === Kind.FIELD) {
      total.fields++;
      if (selection.alias) total.aliases++;
      total.depth = Math.max(total.depth, 1);
      const definition = fieldDefinition(at.type, selection.name.value);
      // Unknown fields are reported by graphql's own rules; they and introspection count towards depth and fields only.
      if (!definition) {
        const uncosted: Position = { type: undefined, pageSize: undefined };
        if (selection.selectionSet) add(total, measure(selection.selectionSet, uncosted, operation), { depthAbove: 1, repeats: 0 });
        continue;
      }
      total.cost++;
      if (!selection.selectionSet) continue;
      let { pageSize } = at;
      let repeats = 1;
      if (definition.args.some((argument) => argument.name === 'first')) {
        const first = selection.arguments?.find((argument) => argument.name.value === 'first');
        pageSize = pageSizeOf(first?.value, operation.variables);
      }
      const nullableType = getNullableType(definition.type);
      const namedType = getNamedType(definition.type);
      if (isListType(nullableType) && isCompositeType(namedType)) {
        repeats = pageSize ?? DEFAULT_LIST_SIZE;
        pageSize = undefined;
      }
      const type = isCompositeType(namedType) ? namedType : undefined;
      add(total, measure(selection.selectionSet, { type, pageSize }, operation), { depthAbove: 1, repeats });
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      const condition = selection.typeCondition?.name.value;
      const type = condition ? typeCondition(operation.schema, condition) : at.type;
      add(total, measure(selection.selectionSet, { ...at, type }, operation));
    } else {
      const fragment = operation.fragments.get(selection.name.value);
      // Cycles are reported by graphql's own NoFragmentCycles rule; here they only must not loop.
      if (!fragment || operation.expanding.has(fragment.name.value)) continue;
      const key = `${fragment.name.value}:${at.pageSize}`;
      let measured = operation.measuredFragments.get(key);
      if (!measured) {
        operation.expanding.add(fragment.name.value);
        const type = typeCondition(operation.schema, fragment.typeCondition.name.value);
        measured = measure(fragment.selectionSet, { type, pageSize: at.pageSize }, operation);
        operation.expanding.delete(fragment.name.value);
        operation.measuredFragments.set(key, measured);
      }
      add(total, measured);
    }
  }
  return total;
}

/** A validation rule that refuses operations too deep, too wide, too aliased or too costly to be a real client's. */
export function queryLimitsRule(limits: QueryLimits) {
  return (context: ValidationContext): ASTVisitor => ({
    Document(document) {
      const schema = context.getSchema();
      const fragments = new Map<string, FragmentDefinitionNode>();
      for (const definition of document.definitions) {
        if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
      }
      for (const definition of document.definitions) {
        if (definition.kind !== Kind.OPERATION_DEFINITION) continue;
        const variables = new Map(definition.variableDefinitions?.map((variable) => [variable.variable.name.value, variable]));
        const root = schema.getRootType(definition.operation) ?? undefined;
        const operation: Operation = { schema, fragments, variables, expanding: new Set(), measuredFragments: new Map() };
        const total = measure(definition.selectionSet, { type: root, pageSize: undefined }, operation);
        const problems = [
          total.depth > limits.maxDepth && `nests ${total.depth} levels deep (at most ${limits.maxDepth})`,
          total.fields > limits.maxFields && `selects ${total.fields} fields (at most ${limits.maxFields})`,
          total.aliases > limits.maxAliases && `uses ${total.aliases} aliases (at most ${limits.maxAliases})`,
          total.cost > limits.maxCost &&
            `costs about ${thousands(total.cost)} (at most ${thousands(limits.maxCost)}: each field counts once per item of ` +
              `the lists above it, a page as its \`first\` and other lists as ${DEFAULT_LIST_SIZE}; ask for smaller pages or fewer fields)`,
        ].filter(Boolean);
        if (problems.length > 0) {
          context.reportError(new GraphQLError(`The operation ${problems.join(', ')}`, { nodes: [definition] }));
        }
      }
      return false;
    },
  });
}

/** Applies the limits to every operation served by yoga. */
export function useQueryLimits(limits: QueryLimits = DEFAULT_QUERY_LIMITS): Plugin {
  return {
    onParse({ setParseFn }) {
      setParseFn((source, options) => parse(source, { ...options, maxTokens: limits.maxTokens }));
    },
    onValidate({ addValidationRule }) {
      addValidationRule(queryLimitsRule(limits));
    },
  };
}
