// Lint with type information: floating promises, type-only imports. Import cycles are
// checked by dpdm in `npm run lint` (eslint-plugin-import-x needs a native resolver that our
// registry mirror does not serve for every platform, which breaks `npm ci`).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', '.cache/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  { files: ['**/*.js'], ...tseslint.configs.disableTypeChecked },
  // The dashboard's ES modules run in the browser (ui/, served by api/ui.ts).
  {
    files: ['ui/**/*.js'],
    languageOptions: {
      sourceType: 'module',
      globals: Object.fromEntries(
        [
          'window',
          'document',
          'location',
          'sessionStorage',
          'fetch',
          'setTimeout',
          'clearTimeout',
          'console',
          'URLSearchParams',
          'TextDecoderStream',
          'CustomEvent',
          'Node',
          'AbortController',
          'queueMicrotask',
        ].map((name) => [name, 'readonly']),
      ),
    },
  },
);
