/*
 * The analysis pieces the security index needs, for the minimal Elasticsearch
 * server of scripts/esnode.py.
 *
 * Elastic's integ-test zip (the only server on Maven Central) lacks the
 * analysis-common module, and the mapping of the `.security` index (where API
 * keys live) names its `pattern_capture` filter, `uax_url_email` tokenizer and
 * `unique` filter. Without them, creating an API key fails with "Unknown
 * filter type [pattern_capture]". This plugin registers those three names on
 * top of the Lucene classes the server already ships (lucene-analysis-common),
 * so the secure node can create and check API keys. esnode.py compiles it with
 * the JDK's javac when it starts the secure node.
 */
package org.wirebeat.esanalysis;

import java.io.IOException;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

import org.apache.lucene.analysis.CharArraySet;
import org.apache.lucene.analysis.TokenFilter;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.Tokenizer;
import org.apache.lucene.analysis.email.UAX29URLEmailTokenizer;
import org.apache.lucene.analysis.pattern.PatternCaptureGroupTokenFilter;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.index.analysis.TokenizerFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.Plugin;

public class WirebeatAnalysisPlugin extends Plugin implements AnalysisPlugin {

    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        return Map.of(
            "pattern_capture", AnalysisPlugin.requiresAnalysisSettings(
                (indexSettings, environment, name, settings) -> patternCapture(name, settings)),
            "unique", (indexSettings, environment, name, settings) -> filter(name, UniqueFilter::new));
    }

    @Override
    public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
        return Map.of("uax_url_email", (indexSettings, environment, name, settings) ->
            TokenizerFactory.newFactory(name, () -> {
                UAX29URLEmailTokenizer tokenizer = new UAX29URLEmailTokenizer();
                tokenizer.setMaxTokenLength(settings.getAsInt("max_token_length", 255));
                return tokenizer;
            }));
    }

    /** Each capture group of each pattern becomes a token; preserve_original keeps the input token. */
    private static TokenFilterFactory patternCapture(String name, Settings settings) {
        List<String> regexes = settings.getAsList("patterns");
        if (regexes.isEmpty()) {
            throw new IllegalArgumentException("pattern_capture [" + name + "] needs patterns");
        }
        Pattern[] patterns = regexes.stream().map(Pattern::compile).toArray(Pattern[]::new);
        boolean preserveOriginal = settings.getAsBoolean("preserve_original", true);
        return filter(name, input -> new PatternCaptureGroupTokenFilter(input, preserveOriginal, patterns));
    }

    private interface Wrap {
        TokenStream wrap(TokenStream input);
    }

    private static TokenFilterFactory filter(String name, Wrap wrap) {
        return new TokenFilterFactory() {
            @Override
            public String name() {
                return name;
            }

            @Override
            public TokenStream create(TokenStream input) {
                return wrap.wrap(input);
            }
        };
    }

    /** Drops every token whose text came before in the same stream. */
    static final class UniqueFilter extends TokenFilter {
        private final CharTermAttribute term = addAttribute(CharTermAttribute.class);
        private final CharArraySet seen = new CharArraySet(8, false);

        UniqueFilter(TokenStream input) {
            super(input);
        }

        @Override
        public boolean incrementToken() throws IOException {
            while (input.incrementToken()) {
                char[] buffer = term.buffer();
                int length = term.length();
                if (!seen.contains(buffer, 0, length)) {
                    seen.add(Arrays.copyOf(buffer, length));
                    return true;
                }
            }
            return false;
        }

        @Override
        public void reset() throws IOException {
            super.reset();
            seen.clear();
        }
    }
}
