/**
 * The netstack's `resolveDns` callback (`(query) => Promise<Buffer>`) for a resolver: a query the
 * resolver drops (no readable id, or a response) becomes a rejection, which the netstack counts as
 * a DNS error and answers with nothing.
 */
export function netstackDnsHandler(resolver: { answer(query: Buffer): Promise<Buffer | undefined> }): (query: Buffer) => Promise<Buffer> {
  return async (query) => {
    const answer = await resolver.answer(query);
    if (answer === undefined) throw new RangeError('DNS message dropped: no readable id, or not a query');
    return answer;
  };
}
