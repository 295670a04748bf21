"""Writes the made-up PDH-CSV files with envelope deviations (issue 14) into this folder.

    python ingest/perfmon/testdata/make_envelope_fixtures.py

Each file reproduces one deviation seen in PerfMon exports from other machines; the values are
made up and deterministic, so the files are the same on every run. The tests read the files.
"""

from __future__ import annotations

import codecs
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAN = "-nan(ind)"  # what a broken counter provider prints


def _line(cells: list[str]) -> str:
    return ",".join(f'"{c}"' for c in cells)


def _write(name: str, header: list[str], rows: list[list[str]], encoding: str, bom: bytes = b"") -> None:
    text = "".join(_line(r) + "\r\n" for r in [header, *rows])
    (HERE / name).write_bytes(bom + text.encode(encoding))


def ru_cut_header() -> None:
    """cp1251, Cyrillic Process counters, first header cell cut inside the zone name: '(RTZ 2 ('."""
    host = "СЕРВЕР-МСК"
    counters = ["% загруженности процессора", "Рабочий набор", "Рабочий набор - частный",
                "Обмен данными: байт в сек", "Счетчик потоков", "Прошло времени", "Квота невыгружаемого пула"]
    procs = ["_Total", "svchost", "svchost#1", "sqlservr", "explorer"]
    cols = [f"\\\\{host}\\Процесс({p})\\{c}" for p in procs for c in counters]
    cols.append(f"\\\\{host}\\Память\\Доступно МБ")
    rows = []
    for r in range(12):
        cells = []
        for i, col in enumerate(cols):
            rate = col.endswith(("процессора", "в сек"))
            cells.append(" " if r == 0 and rate else str(1000 * (i + 1) + r * 7 + (0.5 if i % 3 else 0)))
        if r == 6:
            cells[3] = NAN
        if r == 9:
            cells[10] = "н/д"  # "n/a" in Russian: a dead letter whose bytes are cp1251, not UTF-8
        rows.append([f"03/05/2024 09:{r // 4:02d}:{(r % 4) * 15:02d}.{120 + r:03d}", *cells])
    _write("ru-cut-header-cp1251.csv", ["(PDH-CSV 4.0) (RTZ 2 (", *cols], rows, "cp1251")


def zone_name_without_offset() -> None:
    """UTF-16 LE with BOM, '(W. Europe Daylight Time)' without offset, rows across the autumn DST change."""
    host = "WKS-GPU"
    cols = [
        f"\\\\{host}\\GPU Engine(pid_4242_luid_0x00000000_0x0000D1B2_phys_0_eng_0_engtype_3D)\\Utilization Percentage",
        f"\\\\{host}\\GPU Process Memory(pid_4242_luid_0x00000000_0x0000D1B2_phys_0)\\Dedicated Usage",
        f"\\\\{host}\\Memory\\Commit Limit",
        f"\\\\{host}\\Memory\\Committed Bytes",
        f"\\\\{host}\\Paging File(\\??\\C:\\pagefile.sys)\\% Usage",
        f"\\\\{host}\\Server\\Average Session Lifetime (s)",
        f"\\\\{host}\\Processor Information(_Total)\\Processor Frequency",
    ]
    # Local wall times 01:20 .. 03:20 on 29 Oct 2023 (Berlin): 02:00-02:40 happen twice.
    local = ["01:20", "01:40", "02:00", "02:20", "02:40", "02:00", "02:20", "02:40", "03:00", "03:20"]
    rows = []
    for r, hm in enumerate(local):
        cells = [str(12.5 + r), str(268435456 + r * 4096), "34359738368", str(17179869184 + r),
                 str(3.25 + r), str(600 + r), "2995"]
        if r == 0:
            cells[0] = " "
        if r == 4:
            cells[5] = NAN
        rows.append([f"10/29/2023 {hm}:00.000", *cells])
    rows.insert(7, ["10/29/2023 2:61:00.000", *[str(v) for v in range(1, 8)]])  # broken timestamp
    _write("zone-name-no-offset-utf16.csv", ["(PDH-CSV 4.0) (W. Europe Daylight Time)", *cols], rows,
           "utf-16-le", codecs.BOM_UTF16_LE)


def no_zone_german() -> None:
    """UTF-8, '(PDH-CSV 4.0)' and nothing else, German counters, rows across the spring DST change."""
    host = "PC-BÜRO"
    cols = [
        f"\\\\{host}\\Prozessor(_Total)\\Prozessorzeit (%)",
        f"\\\\{host}\\Arbeitsspeicher\\Verfügbare MB",
        f"\\\\{host}\\Netzwerkschnittstelle(Ethernet)\\Bytes gesendet/s",
        f"\\\\{host}\\Prozess(_Total)\\Arbeitsseite",
        f"\\\\{host}\\Physikalischer Datenträger(_Total)\\Mittlere Sek./Lesevorgänge",
        f"\\\\{host}\\Prozess(_Total)\\Threadanzahl",
    ]
    local = ["01:30", "01:45", "03:00", "03:15"]  # 31 Mar 2024: 02:00 CET became 03:00 CEST
    rows = [[f"03/31/2024 {hm}:00.000", str(10 + r), str(2048 - r), " " if r == 0 else str(1500.5 * r),
             str(1073741824 + r), "0.004", str(1900 + r)] for r, hm in enumerate(local)]
    _write("no-zone-de-utf8.csv", ["(PDH-CSV 4.0)", *cols], rows, "utf-8")


def unknown_zone_french() -> None:
    """cp1252, a zone name no table knows and no offset: parked until the timezone setting names one."""
    host = "PC-SALLE"
    cols = [
        f"\\\\{host}\\Processeur(_Total)\\% temps processeur",
        f"\\\\{host}\\Mémoire\\Mégaoctets disponibles",
        f"\\\\{host}\\Disque logique(C:)\\Moyenne disque s/lecture",
        f"\\\\{host}\\Interface réseau(Ethernet)\\Octets reçus/s",
        f"\\\\{host}\\Processus(_Total)\\Plage de travail",
        f"\\\\{host}\\Processus(_Total)\\Nombre de threads",
    ]
    rows = [[f"07/14/2024 12:00:{s:02d}.000", str(20 + s), "3072", "0.002", " " if s == 0 else str(99 * s),
             str(536870912 + s), "1200"] for s in range(0, 60, 10)]
    _write("unknown-zone-fr-cp1252.csv", ["(PDH-CSV 4.0) (Heure normale de l'Atlantide)", *cols], rows, "cp1252")


def localised_units() -> None:
    """UTF-8 with a full header: counter names in es, pt-BR, zh-CN, ja and it, for the unit table."""
    cols = [
        "\\\\HOST-ES\\Procesador(_Total)\\% de tiempo de procesador",
        "\\\\HOST-ES\\Memoria\\MBytes disponibles",
        "\\\\HOST-ES\\Interfaz de red(Ethernet)\\Bytes enviados/s",
        "\\\\HOST-ES\\Proceso(_Total)\\Espacio de trabajo",
        "\\\\HOST-ES\\Disco físico(_Total)\\Promedio de segundos de disco/lectura",
        "\\\\HOST-PT\\Processador(_Total)\\% Tempo de Processador",
        "\\\\HOST-PT\\Memória\\MBytes disponíveis",
        "\\\\HOST-PT\\Processo(_Total)\\Conjunto de trabalho",
        "\\\\HOST-PT\\Disco Físico(_Total)\\Média de s/leitura de disco",
        "\\\\HOST-ZH\\Processor(_Total)\\% 处理器时间",
        "\\\\HOST-ZH\\内存\\可用 MB",
        "\\\\HOST-ZH\\网络接口(Ethernet)\\发送字节/秒",
        "\\\\HOST-ZH\\进程(_Total)\\工作集",
        "\\\\HOST-ZH\\物理磁盘(_Total)\\平均磁盘 秒/读取",
        "\\\\HOST-JA\\Processor(_Total)\\% Processor Time",
        "\\\\HOST-JA\\メモリ\\使用可能メガバイト",
        "\\\\HOST-JA\\ネットワーク インターフェイス(Ethernet)\\送信バイト/秒",
        "\\\\HOST-JA\\プロセス(_Total)\\ワーキング セット",
        "\\\\HOST-JA\\PhysicalDisk(_Total)\\平均ディスク秒/読み取り",
        "\\\\HOST-IT\\Memoria\\MByte disponibili",
        "\\\\HOST-IT\\Disco logico(C:)\\Media sec/lettura disco",
        "\\\\HOST-IT\\Processo(_Total)\\Working set",
    ]
    rows = [[f"01/02/2024 03:04:{s:02d}.000", *(str(i + s / 10) for i in range(1, len(cols) + 1))] for s in (5, 6)]
    _write("localised-units-utf8.csv", ["(PDH-CSV 4.0) (Coordinated Universal Time)(0)", *cols], rows, "utf-8")


if __name__ == "__main__":
    ru_cut_header()
    zone_name_without_offset()
    no_zone_german()
    unknown_zone_french()
    localised_units()
