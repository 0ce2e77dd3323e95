/* The date and time of a second since the epoch as "YYYY-MM-DDTHH:MM:SS" (UTC, proleptic
 * Gregorian), as time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) writes it for
 * 0 <= s < 8e9: the first 19 characters of decoders/api.py iso_time. Shared by
 * beat/_speedups.c and beat/_flowcore.c (static, compiled into each). */
#ifndef WIREBEAT_ISOTIME_H
#define WIREBEAT_ISOTIME_H

static void second_text(long long s, char *t)
{
    long long days = s / 86400, rem = s % 86400;
    /* civil date from days since 1970-01-01 (400-year eras, years starting in March) */
    long long z = days + 719468, era = z / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    int day = (int)(doy - (153 * mp + 2) / 5 + 1);
    int month = (int)(mp < 10 ? mp + 3 : mp - 9);
    long long year = yoe + era * 400 + (month <= 2);
    int hh = (int)(rem / 3600), mm = (int)(rem / 60 % 60), ss = (int)(rem % 60);
    t[0] = (char)('0' + year / 1000 % 10); t[1] = (char)('0' + year / 100 % 10);
    t[2] = (char)('0' + year / 10 % 10); t[3] = (char)('0' + year % 10); t[4] = '-';
    t[5] = (char)('0' + month / 10); t[6] = (char)('0' + month % 10); t[7] = '-';
    t[8] = (char)('0' + day / 10); t[9] = (char)('0' + day % 10); t[10] = 'T';
    t[11] = (char)('0' + hh / 10); t[12] = (char)('0' + hh % 10); t[13] = ':';
    t[14] = (char)('0' + mm / 10); t[15] = (char)('0' + mm % 10); t[16] = ':';
    t[17] = (char)('0' + ss / 10); t[18] = (char)('0' + ss % 10);
}

#endif
