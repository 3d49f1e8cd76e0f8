/** File names shared by the data plane's processes (inside STATE_DIR/net). */
export const DNS_RECORDS_FILE = 'dns-records.json';
