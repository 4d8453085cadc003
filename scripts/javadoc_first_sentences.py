#!/usr/bin/env python3
"""Adds the missing first sentence to Javadoc comments that doclint reports as "no main description".

Usage (from the repository root, after a build that printed javadoc warnings):
    mvn -B -DskipTests -Dmoe4j.skipCpuDevice=true -Dmoe4j.javadoc.failOnWarnings=false package > build.log
    python3 scripts/javadoc_first_sentences.py build.log          # shows what it would write
    python3 scripts/javadoc_first_sentences.py build.log --apply  # edits the files

Only mechanical cases are handled: a comment with an @return gets "Returns <the @return text>.", a builder
setter (@return this, one @param) gets "Sets {@code name}: <the @param text>.", a constructor gets
"Creates ...". Anything else is listed for a person to write. Review the result: a sentence copied from
@return is correct but not always the best summary.
"""
import collections
import re
import sys


def clean(text):
    return ' '.join(text.split()).rstrip('.').rstrip()


def lower_first(text):
    word = text.split(' ')[0]
    if word[:1].isupper() and not (len(word) > 1 and (word[1].isupper() or word[1].isdigit())) \
            and not word.startswith('{@'):
        return text[0].lower() + text[1:]
    return text


def description(tags, decl):
    returns = [clean(t) for k, t in tags if k == 'return']
    params = [(t.split(None, 1) + [''])[:2] for k, t in tags if k == 'param']
    if returns:
        r = returns[0]
        if r in ('this', 'this builder', '{@code this}'):
            if len(params) == 1:
                m = re.search(r'(\w+)\s*\(', decl)
                return 'Sets {@code ' + (m.group(1) if m else params[0][0]) + '}: ' + lower_first(clean(params[0][1])) + '.'
            return None
        return ('Returns a description such as ' + r[5:] + '.') if r.startswith('e.g. ') else 'Returns ' + lower_first(r) + '.'
    m = re.match(r'(?:public |protected )?([A-Z]\w*)\s*\(', decl)
    if m:
        return 'Creates the exception.' if m.group(1).endswith('Exception') else 'Creates a new {@code ' + m.group(1) + '}.'
    if 'static void main(' in decl:
        return 'Runs the program.'
    return None


def main():
    log, apply = sys.argv[1], '--apply' in sys.argv
    by_file = collections.defaultdict(set)
    for line in open(log, encoding='utf-8'):
        m = re.search(r'(/\S+\.java):(\d+): warning: no main description', line)
        if m:
            by_file[m.group(1)].add(int(m.group(2)))
    manual = []
    for path, numbers in sorted(by_file.items()):
        lines = open(path, encoding='utf-8').read().split('\n')
        for number in sorted(numbers, reverse=True):
            i = number - 1
            while '/**' not in lines[i] and number - 1 - i < 40 and '*/' not in lines[i - 1]:
                i -= 1
            if '/**' not in lines[i]:
                manual.append((path, number, 'comment start not found'))
                continue
            j = i
            while '*/' not in lines[j]:
                j += 1
            inner = '\n'.join(lines[i:j + 1]).split('/**', 1)[1].rsplit('*/', 1)[0]
            tags = []
            for raw in inner.split('\n'):
                text = re.sub(r'^\s*\*\s?', '', raw).strip()
                m = re.match(r'@(\w+)\s*(.*)', text)
                if m:
                    tags.append([m.group(1), m.group(2)])
                elif tags:
                    tags[-1][1] += ' ' + text
            k = j + 1
            while k < len(lines) and (lines[k].strip().startswith('@') or not lines[k].strip()):
                k += 1
            desc = description(tags, lines[k].strip() if k < len(lines) else '')
            if desc is None or (i != j and lines[i].strip() != '/**'):
                manual.append((path, number, lines[k].strip() if k < len(lines) else ''))
                continue
            indent = re.match(r'\s*', lines[i]).group(0)
            if i == j:
                content = lines[i].strip()[3:-2].strip()
                lines[i:i + 1] = [indent + '/**', indent + ' * ' + desc, indent + ' * ' + content, indent + ' */']
            else:
                lines.insert(i + 1, indent + ' * ' + desc)
            print('%s:%d: %s' % (path, number, desc))
        if apply:
            open(path, 'w', encoding='utf-8').write('\n'.join(lines))
    for path, number, what in manual:
        print('WRITE BY HAND %s:%d %s' % (path, number, what))


if __name__ == '__main__':
    main()
