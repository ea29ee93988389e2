// Deliberately (almost) empty: see package.json. Replace this package with the real addon to enable HTTP/3.
export const stub = true
